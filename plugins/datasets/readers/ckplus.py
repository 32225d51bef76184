"""CK+ (Extended Cohn-Kanade): image sequences plus one emotion code per labelled sequence.

``cohn-kanade-images/S005/001/S005_001_00000011.png`` and
``Emotion/S005/001/S005_001_00000011_emotion.txt`` holding a float such as
``   3.0000000e+00``. Sequences run from neutral to the peak, so the emotion labels the last
frames; the first frame is neutral. Many sequences have no emotion file.
"""

from __future__ import annotations

import math
from pathlib import Path

import attrs
from facedapt_plugins.datasets.readers.common import (
    Reader,
    Record,
    Reporter,
    expression_table,
    list_files,
)
from loguru import logger

from facedapt.errors import UsageError

#: Emotion code -> native name (the CK+ README order).
CODES: dict[int, str] = {
    0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear", 5: "happy", 6: "sadness", 7: "surprise",
}
NATIVE: dict[str, str | None] = {
    "neutral": "neutral",
    "anger": "anger",
    "contempt": "contempt",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happy",
    "sadness": "sad",
    "surprise": "surprise",
}
IMAGES_DIR = "cohn-kanade-images"
# The label archive unpacks to Emotion/ or, in some copies, Emotion_labels/Emotion/.
EMOTION_DIRS = ("Emotion", "Emotion_labels/Emotion")


@attrs.define
class CKPlus(Reader):
    """CK+ frames: the last ``frames`` frames of each labelled sequence take its emotion (never
    the first, neutral onset frame);
    ``first_as_neutral`` adds every sequence's first frame as neutral (labelled or not)."""

    name = "ckplus"
    layout = f"{IMAGES_DIR}/S005/001/S005_001_00000011.png and Emotion/S005/001/S005_001_00000011_emotion.txt"

    frames: int = attrs.field(default=1, kw_only=True)
    first_as_neutral: bool = attrs.field(default=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        self._table = expression_table(self.name, NATIVE, self.expression_map)
        if not isinstance(self.frames, int) or self.frames < 1:
            raise UsageError(f"ckplus: frames must be a positive integer, not {self.frames!r}")

    def _emotion_dir(self) -> Path:
        for rel in EMOTION_DIRS:
            if (self.root / rel).is_dir():
                return self.root / rel
        return self.root / EMOTION_DIRS[0]

    def records(self, report: Reporter) -> list[Record]:
        images_dir = self.require(self.root / IMAGES_DIR, "CK+ image folder")
        emotion_dir = self.require(self._emotion_dir(), "CK+ emotion label folder")
        out: list[Record] = []
        unlabelled = 0
        for subject_dir in _dirs(images_dir):
            sequences = _dirs(subject_dir)
            if not sequences:
                report.note(subject_dir, "subject folder has no sequences")
            for seq_dir in sequences:
                frames = list_files(seq_dir, images_only=True)
                if not frames:
                    report.note(seq_dir, "sequence folder has no images")
                    continue
                label_files = sorted((emotion_dir / subject_dir.name / seq_dir.name).glob("*_emotion.txt"))
                code = self._read_code(label_files[-1], report) if label_files else None
                if label_files and code is None:
                    continue  # bad label, skipped (reported)
                subject = subject_dir.name
                picked: list[tuple[Path, str]] = []
                if code is not None:
                    # The first frame is the neutral onset, never a peak (unless it is the only one).
                    peaks = frames[1:] if len(frames) > 1 else frames
                    picked = [(p, CODES[code]) for p in peaks[-self.frames:]]
                else:
                    unlabelled += 1
                if self.first_as_neutral and all(p != frames[0] for p, _ in picked):
                    picked.insert(0, (frames[0], "neutral"))
                for path, native in picked:
                    index = self._table[native]
                    if index is None:
                        report.drop(native)
                        continue
                    # The frames of one sequence showing one expression are one capture: a holdout
                    # must not put one peak frame on each side.
                    out.append(Record(path=str(path), source=path, subject=subject, expression=index, yaw=0.0,
                                      capture=f"{subject}/{seq_dir.name}/{native}", key=path.stem))
        if unlabelled:
            what = "kept only their first frame as neutral" if self.first_as_neutral else "skipped"
            # Not a problem: CK+ ships labels for only part of its sequences.
            logger.info(f"ckplus: {unlabelled} sequences have no emotion file: {what}")
        return out

    def _read_code(self, path: Path, report: Reporter) -> int | None:
        text = path.read_text(errors="replace").strip()
        try:
            value = float(text)
        except ValueError:
            report.bad(path, f"emotion file does not hold a number: {text[:40]!r}")
            return None
        if not math.isfinite(value) or value != int(value) or int(value) not in CODES:
            report.bad(path, f"emotion code {text} is out of range (0..7)")
            return None
        return int(value)


def _dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
