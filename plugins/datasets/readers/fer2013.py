"""FER2013: ``fer2013.csv`` with columns ``emotion,pixels,Usage``; 48x48 grayscale images
stored as 2304 space-separated integers. No subjects (one id, "unknown") and no pose."""

from __future__ import annotations

import csv
from pathlib import Path

import attrs
import numpy as np
from facedapt_plugins.datasets.readers.common import (
    BadImage,
    Reader,
    Record,
    Reporter,
    expression_table,
)
from PIL import Image

from facedapt.errors import DataError, UsageError

CODES: dict[int, str] = {0: "Angry", 1: "Disgust", 2: "Fear", 3: "Happy", 4: "Sad", 5: "Surprise", 6: "Neutral"}
NATIVE: dict[str, str | None] = {
    "Angry": "anger",
    "Disgust": "disgust",
    "Fear": "fear",
    "Happy": "happy",
    "Sad": "sad",
    "Surprise": "surprise",
    "Neutral": "neutral",
}
USAGES = ("Training", "PublicTest", "PrivateTest")
SIDE = 48
FILE = "fer2013.csv"


@attrs.define
class FER2013(Reader):
    """FER2013 from its CSV; ``root`` is the folder holding fer2013.csv or the CSV itself."""

    name = "fer2013"
    layout = "fer2013.csv with columns emotion,pixels,Usage"

    usage: list[str] | None = attrs.field(default=None, kw_only=True)  # None: all three parts

    def __attrs_post_init__(self) -> None:
        self._table = expression_table(self.name, NATIVE, self.expression_map)
        bad = [u for u in self.usage or () if u not in USAGES]
        if bad:
            raise UsageError(f"fer2013: unknown usage {', '.join(bad)}; usage: {', '.join(USAGES)}")

    @property
    def csv_path(self) -> Path:
        return self.root if self.root.is_file() else self.root / FILE

    def fingerprint_files(self) -> list[Path]:
        return [self.csv_path]

    def records(self, report: Reporter) -> list[Record]:
        path = self.require(self.csv_path, "FER2013 CSV")
        out: list[Record] = []
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = {"emotion", "pixels"} - set(reader.fieldnames or ())
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                                "expected emotion,pixels,Usage")
            for row in reader:
                where = f"{path}:{reader.line_num}"
                usage = (row.get("Usage") or "").strip()
                if self.usage is not None and usage not in self.usage:
                    continue
                text = (row.get("emotion") or "").strip()
                if not text.isdigit() or int(text) not in CODES:
                    report.bad(where, f"emotion {text!r} is out of range (0..6)")
                    continue
                native = CODES[int(text)]
                index = self._table[native]
                if index is None:
                    report.drop(native)
                    continue
                out.append(Record(path=where, source=_pixels_loader(row.get("pixels") or ""), subject="unknown",
                                  expression=index))
        return out


def _pixels_loader(text: str):
    def load() -> Image.Image:
        try:
            values = np.array(text.split(), dtype=np.int64)
        except ValueError:
            raise BadImage("pixels are not space-separated integers") from None
        if values.size != SIDE * SIDE:
            raise BadImage(f"{values.size} pixel values, expected {SIDE * SIDE} (48x48)")
        if values.min() < 0 or values.max() > 255:
            raise BadImage("pixel values outside 0..255")
        return Image.fromarray(values.reshape(SIDE, SIDE).astype(np.uint8), mode="L")

    return load
