"""Faces in ordinary photos: read a photo, find faces with OpenCV's Haar cascade, crop them.

OpenCV is optional (``pip install 'facedapt[detect]'``); without it, or with ``detect=False``,
the whole photo (its center square) is taken as one face.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import numpy as np
import torch

from facedapt.errors import DataError

#: The frontal-face cascade that opencv-python ships (cv2.data.haarcascades).
CASCADE = "haarcascade_frontalface_default.xml"
#: A Haar box spans brows to mouth; training faces show the whole head, so grow it on each side.
MARGIN = 0.25
INSTALL_HINT = "pip install 'facedapt[detect]'"

Box = tuple[int, int, int, int]  # x, y, width, height in pixels of the photo


@attrs.frozen
class FaceCrop:
    """One face of a photo: the square region the model sees (``box``) and its RGB pixels."""

    image: Path
    box: Box
    pixels: torch.Tensor  # uint8 [3, H, W]
    detected: bool  # False: the whole photo stood in for a face


def read_photo(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 [H, W, 3] of an image file, turned upright by its EXIF orientation (phone photos)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB")).copy()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the image ({str(exc).splitlines()[0][:120] or type(exc).__name__})") from None


def opencv_available() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def detect(rgb: np.ndarray, min_fraction: float = 0.05) -> list[Box]:
    """Face boxes (largest first) in an RGB photo; needs OpenCV (ImportError otherwise).

    ``min_fraction``: smallest face side as a fraction of the photo's shorter side (and at least
    the cascade's 24 pixels), which keeps texture false positives out.
    """
    import cv2

    cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, CASCADE))
    if cascade.empty():
        raise DataError(f"OpenCV's {CASCADE} is missing from {cv2.data.haarcascades} (this OpenCV build has no "
                        f"Haar cascades; {INSTALL_HINT} installs one that does)")
    gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    side = max(24, int(min(gray.shape) * min_fraction))
    found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
    boxes = [tuple(int(v) for v in b) for b in (found if len(found) else [])]
    return sorted(boxes, key=lambda b: -b[2] * b[3])  # type: ignore[return-value]


def square_around(box: Box, width: int, height: int, margin: float = MARGIN) -> Box:
    """The box grown by ``margin`` of its size on each side, made square, kept inside the photo."""
    x, y, w, h = box
    side = round(max(w, h) * (1 + 2 * margin))
    side = min(side, width, height)
    cx, cy = x + w / 2, y + h / 2
    left = round(min(max(cx - side / 2, 0), width - side))
    top = round(min(max(cy - side / 2, 0), height - side))
    return left, top, side, side


def center_square(width: int, height: int) -> Box:
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side, side


def find_faces(path: str | os.PathLike, use_detector: bool = True, margin: float = MARGIN) -> list[FaceCrop]:
    """The faces of one photo (empty when the detector finds none); without the detector, its
    center square as one face."""
    rgb = read_photo(path)
    height, width = rgb.shape[:2]
    if use_detector:
        boxes = [square_around(b, width, height, margin) for b in detect(rgb)]
    else:
        boxes = [center_square(width, height)]
    out = []
    for x, y, w, h in boxes:
        pixels = torch.from_numpy(np.ascontiguousarray(rgb[y:y + h, x:x + w])).permute(2, 0, 1).contiguous()
        out.append(FaceCrop(Path(path), (x, y, w, h), pixels, use_detector))
    return out
