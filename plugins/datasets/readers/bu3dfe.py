"""BU-3DFE: the 2D frontal textures ``F0001_AN01WH_F2D.bmp``, or renders listed in a manifest.

Name: subject (F0001..F0056, M0001..M0044), expression (AN DI FE HA SA SU with intensity
01..04, NE00 neutral), ethnicity code, ``F2D``. Multi-pose images are renders the user makes
from the 3D scans; pass them with ``manifest`` (columns as the generic manifest: path, subject,
expression, yaw, ...). Where a render row lacks subject or expression, they are read from a
BU-3DFE code in the file name (``F0001_HA03...``).
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
from facedapt_plugins.datasets.readers.common import (
    Reader,
    Record,
    Reporter,
    expression_table,
    list_files,
)
from facedapt_plugins.datasets.readers.manifest import (
    manifest_path,
    read_rows,
    row_record,
)

from facedapt.data.samples import EXPRESSIONS
from facedapt.errors import DataError

NATIVE: dict[str, str | None] = {
    "AN": "anger",
    "DI": "disgust",
    "FE": "fear",
    "HA": "happy",
    "NE": "neutral",
    "SA": "sad",
    "SU": "surprise",
}
LEVELS = 4  # intensity 01..04 -> 0.25..1.0; neutral (00) -> 0
NAME = re.compile(r"^([FM]\d{4})_([A-Z]{2})(\d{2})([A-Z]{2})_F2D\.bmp$", re.IGNORECASE)
CODE = re.compile(r"([FM]\d{4})_(AN|DI|FE|HA|NE|SA|SU)(\d{2})", re.IGNORECASE)


@attrs.define
class BU3DFE(Reader):
    """BU-3DFE; the 2D textures are frontal (yaw 0); capture = subject + expression + intensity."""

    name = "bu3dfe"
    layout = "F0001/F0001_AN01WH_F2D.bmp (or manifest: renders.csv)"

    manifest: str | None = attrs.field(default=None, kw_only=True)  # CSV/JSONL of rendered views
    intensities: list[int] | None = attrs.field(default=None, kw_only=True)  # None: 1..4 (neutral always)

    def __attrs_post_init__(self) -> None:
        self._table = expression_table(self.name, NATIVE, self.expression_map)
        # Manifest rows name canonical expressions; unmapped canonical names pass through.
        self._canonical = expression_table(self.name, {n: n for n in EXPRESSIONS}, None)

    def fingerprint_files(self) -> list[Path]:
        if self.manifest is None:
            return list_files(self.root, images_only=True)
        path = manifest_path(self.root, self.manifest)
        try:
            return [path, *(path.parent / str(r.get("path") or "") for _, r in read_rows(path))]
        except DataError:  # fingerprinting never fails on content; load() reports it
            return [path]

    def records(self, report: Reporter) -> list[Record]:
        return self._renders(report) if self.manifest is not None else self._textures(report)

    def _keep(self, native: str, level: int, report: Reporter) -> int | None:
        if native != "NE" and self.intensities is not None and level not in self.intensities:
            return None
        index = self._table[native]
        if index is None:
            report.drop(native)
        return index

    def _textures(self, report: Reporter) -> list[Record]:
        out: list[Record] = []
        for path in list_files(self.root, images_only=True):
            m = NAME.match(path.name)
            if m is None:
                continue  # the release also holds renders, maps and scans; only *_F2D.bmp are read
            subject, expr, level_text, _ethnicity = (g.upper() for g in m.groups())
            level = int(level_text)
            problem = _check_code(expr, level)
            if problem:
                report.bad(path, problem)
                continue
            index = self._keep(expr, level, report)
            if index is None:
                continue
            out.append(Record(path=str(path), source=path, subject=subject, expression=index, yaw=0.0,
                              intensity=level / LEVELS, capture=f"{subject}/{expr}{level:02d}", key=path.stem.upper()))
        return out

    def _renders(self, report: Reporter) -> list[Record]:
        path = manifest_path(self.root, self.manifest)
        out: list[Record] = []
        for where, row in read_rows(path):
            m = CODE.search(Path(str(row.get("path") or "")).name)
            row = dict(row)
            level = None
            if m is not None:
                subject, expr, level_text = m.group(1).upper(), m.group(2).upper(), m.group(3)
                level = int(level_text)
                problem = _check_code(expr, level)
                if problem:
                    report.bad(where, problem)
                    continue
                if not str(row.get("subject") or "").strip():
                    row["subject"] = subject
                if not str(row.get("expression") or "").strip():
                    index = self._keep(expr, level, report)
                    if index is None:
                        continue
                    row["expression"] = str(index)
                if not str(row.get("intensity") or "").strip():
                    row["intensity"] = str(level / LEVELS)
            record = row_record(where, row, path.parent, self._canonical, report)
            if record is None:
                continue
            if record.capture is None and level is not None:
                record.capture = f"{record.subject}/{m.group(2).upper()}{level:02d}"
            out.append(record)
        return out


def _check_code(expr: str, level: int) -> str | None:
    if expr not in NATIVE:
        return f"unknown expression code {expr!r}; BU-3DFE codes: {', '.join(NATIVE)}"
    if (expr == "NE") != (level == 0) or not 0 <= level <= LEVELS:
        return f"intensity {level:02d} is out of range for {expr} (NE00, others 01..04)"
    return None

