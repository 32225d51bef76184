"""Radboud Faces Database: ``Rafd090_01_Caucasian_female_angry_frontal.jpg``.

Camera 000..180 in 45 degree steps, 090 frontal. yaw = camera - 90, so 000 is -90 and 180 is
+90 (see docs/datasets.md for the sign).
"""

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

from facedapt.errors import UsageError

NATIVE: dict[str, str | None] = {
    "angry": "anger",
    "contemptuous": "contempt",
    "disgusted": "disgust",
    "fearful": "fear",
    "happy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "surprised": "surprise",
}
CAMERAS = ("000", "045", "090", "135", "180")
GAZES = ("frontal", "left", "right")

NAME = re.compile(r"^Rafd(\d{3})_(\d+)_([A-Za-z]+)_(female|male)_([a-z]+)_([a-z]+)\.(?:jpe?g|png)$", re.IGNORECASE)


@attrs.define
class RaFD(Reader):
    """RaFD photographs; yaw = camera - 90; capture = subject + expression + gaze."""

    name = "rafd"
    layout = "Rafd090_01_Caucasian_female_angry_frontal.jpg"

    cameras: list[str] | None = attrs.field(default=None, kw_only=True)  # None: all five
    gazes: list[str] | None = attrs.field(default=None, kw_only=True)  # None: frontal, left, right

    def __attrs_post_init__(self) -> None:
        self._table = expression_table(self.name, NATIVE, self.expression_map)
        for opt, allowed in (("cameras", CAMERAS), ("gazes", GAZES)):
            bad = [v for v in getattr(self, opt) or () if str(v) not in allowed]
            if bad:
                raise UsageError(f"rafd: unknown {opt} {', '.join(map(str, bad))}; {opt}: {', '.join(allowed)}")

    def records(self, report: Reporter) -> list[Record]:
        cameras = set(self.cameras) if self.cameras is not None else set(CAMERAS)
        gazes = set(self.gazes) if self.gazes is not None else set(GAZES)
        out: list[Record] = []
        for path in list_files(self.root, images_only=True):
            m = NAME.match(path.name)
            if m is None:
                report.note(path, "name does not match the RaFD pattern Rafd090_01_Caucasian_female_angry_frontal.jpg")
                continue
            camera, number, _ethnicity, _gender, expr, gaze = (g.lower() for g in m.groups())
            if camera not in CAMERAS:
                report.bad(path, f"camera {camera} is not one of {', '.join(CAMERAS)}")
                continue
            if expr not in NATIVE:
                report.bad(path, f"unknown expression {expr!r}; RaFD expressions: {', '.join(NATIVE)}")
                continue
            if gaze not in GAZES:
                report.bad(path, f"unknown gaze {gaze!r}; gazes: {', '.join(GAZES)}")
                continue
            if camera not in cameras or gaze not in gazes:
                continue
            index = self._table[expr]
            if index is None:
                report.drop(expr)
                continue
            out.append(Record(
                path=str(path), source=path, subject=number, expression=index, yaw=float(int(camera) - 90),
                capture=f"{number}/{expr}/{gaze}", key=path.stem.lower(),
            ))
        return out
