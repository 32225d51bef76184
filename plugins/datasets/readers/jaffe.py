"""JAFFE: ``KA.AN1.39.tiff``: subject initials, expression + repeat index, image id."""

from __future__ import annotations

import re

import attrs
from facedapt_plugins.datasets.readers.common import (
    Reader,
    Record,
    Reporter,
    expression_table,
    list_files,
)

NATIVE: dict[str, str | None] = {
    "AN": "anger",
    "DI": "disgust",
    "FE": "fear",
    "HA": "happy",
    "NE": "neutral",
    "SA": "sad",
    "SU": "surprise",
}
NAME = re.compile(r"^([A-Z]{2})\.([A-Z]{2})(\d+)\.(\d+)\.tiff?$", re.IGNORECASE)


@attrs.define
class JAFFE(Reader):
    """JAFFE photographs (frontal: yaw 0); subject id = the initials, e.g. "KA"."""

    name = "jaffe"
    layout = "KA.AN1.39.tiff"


    def __attrs_post_init__(self) -> None:
        self._table = expression_table(self.name, NATIVE, self.expression_map)

    def records(self, report: Reporter) -> list[Record]:
        out: list[Record] = []
        for path in list_files(self.root, images_only=True):
            m = NAME.match(path.name)
            if m is None:
                report.note(path, "name does not match the JAFFE pattern KA.AN1.39.tiff")
                continue
            subject, expr, _repeat, _id = m.groups()
            expr = expr.upper()
            if expr not in NATIVE:
                report.bad(path, f"unknown expression code {expr!r}; JAFFE codes: {', '.join(NATIVE)}")
                continue
            index = self._table[expr]
            if index is None:
                report.drop(expr)
                continue
            out.append(Record(path=str(path), source=path, subject=subject.upper(), expression=index, yaw=0.0,
                              key=path.name.upper().rsplit(".", 1)[0]))
        return out
