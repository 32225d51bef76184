"""KDEF (Karolinska Directed Emotional Faces): ``KDEF/AF01/AF01ANFL.JPG``.

Name: session (A/B), gender (F/M), subject number (01..35), expression, angle. The subject
id is gender + number ("F01"): the same person in both sessions is one subject, and the
session is kept apart in the capture id.
"""

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
)

from facedapt.errors import UsageError

NATIVE: dict[str, str | None] = {
    "AF": "fear",  # "afraid"
    "AN": "anger",
    "DI": "disgust",
    "HA": "happy",
    "NE": "neutral",
    "SA": "sad",
    "SU": "surprise",
}
ANGLE_YAW: dict[str, float] = {"FL": -90, "HL": -45, "S": 0, "HR": 45, "FR": 90}

# Extensions vary in case in the official release (.JPG and .jpg), hence IGNORECASE.
NAME = re.compile(r"^([AB])([FM])(\d{2})(AF|AN|DI|HA|NE|SA|SU)(FL|HL|S|HR|FR)\.jpe?g$", re.IGNORECASE)


@attrs.define
class KDEF(Reader):
    """KDEF photographs; five angles FL -90, HL -45, S 0, HR +45, FR +90."""

    name = "kdef"
    layout = "KDEF/AF01/AF01ANFL.JPG"

    angles: list[str] | None = attrs.field(default=None, kw_only=True)  # None: all five
    sessions: list[str] | None = attrs.field(default=None, kw_only=True)  # None: A and B

    def __attrs_post_init__(self) -> None:
        self._table = expression_table(self.name, NATIVE, self.expression_map)
        bad = [a for a in self.angles or () if a.upper() not in ANGLE_YAW]
        if bad:
            raise UsageError(f"kdef: unknown angle(s) {', '.join(bad)}; angles: {', '.join(ANGLE_YAW)}")

    def records(self, report: Reporter) -> list[Record]:
        angles = {a.upper() for a in self.angles} if self.angles is not None else set(ANGLE_YAW)
        sessions = {s.upper() for s in self.sessions} if self.sessions is not None else {"A", "B"}
        if self.root.is_dir():
            for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
                if not any(is_image(f) for f in list_files(folder)):
                    report.note(folder, "subject folder has no images")
        out: list[Record] = []
        for path in list_files(self.root):
            m = NAME.match(path.name)
            if m is None:
                # The release holds a few stray files; list them, they carry no label.
                report.note(path, "name does not match the KDEF pattern AF01ANFL.JPG; ignored")
                continue
            session, gender, number, expr, angle = (g.upper() for g in m.groups())
            if angle not in angles or session not in sessions:
                continue
            index = self._table[expr]
            if index is None:
                report.drop(expr)
                continue
            subject = gender + number
            out.append(Record(
                path=str(path), source=path, subject=subject, expression=index, yaw=ANGLE_YAW[angle],
                capture=f"{session}{subject}{expr}", key=path.stem.upper(),
            ))
        return out
