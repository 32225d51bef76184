"""One folder per expression: ``ROOT/<expression>/<image>`` (nested split folders such as
``train/happy/x.png`` work too: the image's own folder names the class). An optional
``pattern`` regex on the file name supplies subject, yaw, pitch and capture through named
groups, e.g. ``(?P<subject>[^_]+)_(?P<yaw>[-+]?\\d+)``."""

from __future__ import annotations

import re

import attrs
from facedapt_plugins.datasets.readers.common import (
    Reader,
    Record,
    Reporter,
    expression_table,
    is_image,
    list_files,
    parse_float,
)

from facedapt.data.samples import EXPRESSIONS
from facedapt.errors import UsageError

#: Folder name (lower case) -> canonical. Covers the canonical names and the spellings other
#: releases use (FER2013 image dumps: angry; RAF-DB: happiness; RaFD: surprised, ...).
NATIVE: dict[str, str | None] = {name: name for name in EXPRESSIONS} | {
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "fearful": "fear",
    "afraid": "fear",
    "angry": "anger",
    "disgusted": "disgust",
    "contemptuous": "contempt",
}
GROUPS = ("subject", "yaw", "pitch", "capture")


@attrs.define
class ImageFolder(Reader):
    """Images sorted into expression folders; other labels from an optional file-name regex."""

    name = "image_folder"
    layout = "ROOT/<expression>/<image>"

    pattern: str | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        overrides = {k.lower(): v for k, v in (self.expression_map or {}).items()}
        self._table = expression_table(self.name, NATIVE, overrides, open_keys=True)
        self._regex = None
        if self.pattern is not None:
            try:
                self._regex = re.compile(self.pattern)
            except re.error as exc:
                raise UsageError(f"image_folder: pattern {self.pattern!r} is not a valid regex: {exc}") from None
            unknown = set(self._regex.groupindex) - set(GROUPS)
            if unknown:
                raise UsageError(f"image_folder: pattern group(s) {', '.join(sorted(unknown))} unknown; "
                                 f"groups: {', '.join(GROUPS)}")

    def records(self, report: Reporter) -> list[Record]:
        if self.root.is_dir():
            for folder in sorted(p for p in self.root.rglob("*") if p.is_dir() and p.name.lower() in self._table):
                if not any(is_image(f) for f in folder.iterdir()):
                    report.note(folder, "expression folder has no images")
        out: list[Record] = []
        for path in list_files(self.root, images_only=True):
            if path.parent == self.root:
                report.note(path, "image is not inside an expression folder; ignored")
                continue
            folder = path.parent.name.lower()
            if folder not in self._table:
                report.bad(path, f"folder {path.parent.name!r} is not an expression; "
                                 f"known: {', '.join(sorted(self._table))} (map others with expression_map)")
                continue
            index = self._table[folder]
            if index is None:
                report.drop(folder)
                continue
            record = Record(path=str(path), source=path, subject="unknown", expression=index)
            if self._regex is not None and not self._apply_pattern(record, path.name, report):
                continue
            out.append(record)
        return out

    def _apply_pattern(self, record: Record, name: str, report: Reporter) -> bool:
        m = self._regex.search(name)
        if m is None:
            report.bad(record.path, f"file name does not match pattern {self.pattern!r}")
            return False
        groups = {k: v for k, v in m.groupdict().items() if v is not None}
        for key in ("yaw", "pitch"):
            if key in groups:
                try:
                    setattr(record, key, parse_float(groups[key]))
                except ValueError:
                    report.bad(record.path, f"{key} {groups[key]!r} from the pattern is not a number")
                    return False
        if groups.get("subject"):
            record.subject = groups["subject"]
        if groups.get("capture"):
            record.capture = groups["capture"]
        return True
