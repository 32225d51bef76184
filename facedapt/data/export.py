"""Write Samples out as PNG files plus a manifest that the ``manifest`` reader reads back.

Use it to freeze a converted dataset, hand labelled images to another tool, or make renders
(e.g. BU-3DFE views) into a dataset facedapt reads with the same labels.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from facedapt.data.samples import EXPRESSIONS, Samples

COLUMNS = ("path", "expression", "subject", "yaw", "pitch", "capture", "split", "landmarks", "intensity")


def write_manifest(samples: Samples, out_dir: str | Path) -> Path:
    """Write ``out_dir/images/NNNNNN.png`` and ``out_dir/manifest.csv``; returns the CSV path.

    Columns: path (relative to out_dir), expression (canonical name or empty), subject, yaw,
    pitch (degrees or empty), capture (integer id or empty), split (empty), landmarks (JSON
    list of [x, y] in the written image's pixels, or empty), intensity (0..1 or empty).
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(samples))))
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for i in range(len(samples)):
            rel = f"images/{i:0{width}d}.png"
            _write_png(samples.images[i].numpy(), out / rel)
            e = int(samples.expression[i])
            capture = int(samples.capture[i])
            writer.writerow([
                rel,
                EXPRESSIONS[e] if 0 <= e < len(EXPRESSIONS) else "",
                samples.subject_of(i),
                _number(float(samples.yaw[i])),
                _number(float(samples.pitch[i])),
                "" if capture < 0 else capture,
                "",
                _landmarks(samples, i),
                _number(float(samples.intensity[i])),
            ])
    return manifest


def _write_png(image: np.ndarray, path: Path) -> None:
    array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(array)).save(path)


def _number(value: float) -> str:
    if math.isnan(value):
        return ""
    return str(int(value)) if value == int(value) else repr(value)


def _landmarks(samples: Samples, i: int) -> str:
    if samples.landmarks is None:
        return ""
    points = samples.landmarks[i].tolist()
    if any(math.isnan(c) for p in points for c in p):
        return ""
    return json.dumps(points)
