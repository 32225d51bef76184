"""CMU Multi-PIE: ``session0S/multiview/SSS/RR/CC_C/SSS_0S_RR_CCC_II.png``."""

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

from facedapt.errors import UsageError

#: (session, recording) -> native expression. Session 4 records neutral twice.
RECORDINGS: dict[tuple[int, int], str] = {
    (1, 1): "neutral", (1, 2): "smile",
    (2, 1): "neutral", (2, 2): "surprise", (2, 3): "squint",
    (3, 1): "neutral", (3, 2): "smile", (3, 3): "disgust",
    (4, 1): "neutral", (4, 2): "neutral", (4, 3): "scream",
}
#: Native -> canonical. squint and scream have no canonical class: dropped unless mapped.
NATIVE: dict[str, str | None] = {
    "neutral": "neutral",
    "smile": "happy",
    "surprise": "surprise",
    "disgust": "disgust",
    "squint": None,
    "scream": None,
}
#: The 13 head-height cameras, -90 (11_0) .. +90 (24_0) in 15 degree steps.
CAMERA_YAW: dict[str, float] = {
    "11_0": -90, "12_0": -75, "09_0": -60, "08_0": -45, "13_0": -30, "14_0": -15, "05_1": 0,
    "05_0": 15, "04_1": 30, "19_0": 45, "20_0": 60, "01_0": 75, "24_0": 90,
}
#: Cameras mounted above head height: no yaw on the 15 degree grid, so NaN when selected.
RAISED_CAMERAS = ("08_1", "19_1")

NAME = re.compile(r"^(\d{3})_(\d{2})_(\d{2})_(\d{2})(\d)_(\d{2})\.png$", re.IGNORECASE)


@attrs.define
class MultiPIE(Reader):
    """Multi-PIE multiview images; expression from (session, recording), yaw from the camera."""

    name = "multipie"
    layout = "session0S/multiview/SSS/RR/CC_C/SSS_0S_RR_CCC_II.png"

    cameras: list[str] | None = attrs.field(default=None, kw_only=True)  # None: the 13 head-height ones
    illuminations: list[int] | None = attrs.field(default=None, kw_only=True)  # None: all 20 flashes
    sessions: list[int] | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        self._table = expression_table(self.name, NATIVE, self.expression_map)
        known = set(CAMERA_YAW) | set(RAISED_CAMERAS)
        bad = [c for c in self.cameras or () if c not in known]
        if bad:
            raise UsageError(f"multipie: unknown camera(s) {', '.join(bad)}; cameras: {', '.join(sorted(known))}")

    def fingerprint_files(self) -> list[Path]:
        return list_files(self.root, images_only=True)

    def records(self, report: Reporter) -> list[Record]:
        cameras = set(self.cameras) if self.cameras is not None else set(CAMERA_YAW)
        out: list[Record] = []
        for path in list_files(self.root, images_only=True):
            m = NAME.match(path.name)
            if m is None:
                report.note(path, "name does not match the Multi-PIE pattern SSS_0S_RR_CCC_II.png")
                continue
            subject, session, recording, cam_a, cam_b, illum = m.groups()
            camera = f"{cam_a}_{cam_b}"
            if camera not in CAMERA_YAW and camera not in RAISED_CAMERAS:
                report.bad(path, f"unknown camera {camera}")
                continue
            native = RECORDINGS.get((int(session), int(recording)))
            if native is None:
                report.bad(path, f"session {session} has no recording {recording} (expression unknown)")
                continue
            if (camera not in cameras or (self.illuminations is not None and int(illum) not in self.illuminations)
                    or (self.sessions is not None and int(session) not in self.sessions)):
                continue
            index = self._table[native]
            if index is None:
                report.drop(native)
                continue
            out.append(Record(
                path=str(path), source=path, subject=subject, expression=index,
                yaw=CAMERA_YAW.get(camera, float("nan")),
                capture=f"{subject}/{session}/{recording}/{illum}", key=path.stem,
            ))
        return out
