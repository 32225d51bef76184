"""RAF-DB basic: ``EmoLabel/list_patition_label.txt`` (lines ``train_00001.jpg 5``; the
misspelling is the official name) and images under ``Image/aligned/`` (``train_00001_aligned.jpg``)
or ``Image/original/``. No subjects (one id, "unknown") and no pose."""

from __future__ import annotations

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

CODES: dict[int, str] = {1: "Surprise", 2: "Fear", 3: "Disgust", 4: "Happiness", 5: "Sadness", 6: "Anger", 7: "Neutral"}
NATIVE: dict[str, str | None] = {
    "Surprise": "surprise",
    "Fear": "fear",
    "Disgust": "disgust",
    "Happiness": "happy",
    "Sadness": "sad",
    "Anger": "anger",
    "Neutral": "neutral",
}
LIST_FILE = "EmoLabel/list_patition_label.txt"
IMAGE_SETS = ("aligned", "original")
PARTITIONS = ("train", "test")


@attrs.define
class RAFDB(Reader):
    """RAF-DB basic emotions; ``images`` picks Image/aligned (100x100) or Image/original."""

    name = "rafdb"
    layout = f"{LIST_FILE} and Image/aligned/train_00001_aligned.jpg"

    images: str = attrs.field(default="aligned", kw_only=True)
    partition: str | None = attrs.field(default=None, kw_only=True)  # None: train and test

    def __attrs_post_init__(self) -> None:
        self._table = expression_table(self.name, NATIVE, self.expression_map)
        if self.images not in IMAGE_SETS:
            raise UsageError(f"rafdb: images must be one of {', '.join(IMAGE_SETS)}, not {self.images!r}")
        if self.partition is not None and self.partition not in PARTITIONS:
            raise UsageError(f"rafdb: partition must be one of {', '.join(PARTITIONS)}, not {self.partition!r}")

    def fingerprint_files(self) -> list[Path]:
        return [self.root / LIST_FILE, *list_files(self.root / "Image" / self.images)]

    def records(self, report: Reporter) -> list[Record]:
        list_path = self.require(self.root / LIST_FILE, "RAF-DB label list")
        folder = self.require(self.root / "Image" / self.images, f"RAF-DB image folder Image/{self.images}")
        out: list[Record] = []
        for number, line in enumerate(list_path.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{list_path}:{number}"
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                report.bad(where, f"expected 'NAME LABEL', got {line.strip()[:60]!r}")
                continue
            name, code = parts[0], int(parts[1])
            if code not in CODES:
                report.bad(where, f"{name}: label {code} is out of range (1..7)")
                continue
            if self.partition is not None and not name.startswith(self.partition + "_"):
                continue
            native = CODES[code]
            index = self._table[native]
            if index is None:
                report.drop(native)
                continue
            stem, dot, ext = name.rpartition(".")
            file = folder / (f"{stem}_aligned.{ext}" if self.images == "aligned" else name)
            # A missing file surfaces as a bad image when decoding (named, fail or skip).
            out.append(Record(path=str(file), source=file, subject="unknown", expression=index, key=name))
        return out
