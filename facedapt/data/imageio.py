"""Decoding image files: the one decoder every reader and prediction path uses, so images
reach a model prepared exactly as its training images were."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np
from PIL import Image


class BadImage(Exception):
    """An image that cannot be decoded; the message says why in a few words."""


@attrs.frozen
class Fit:
    """How source pixel coordinates map into the stored image (center crop, then scale)."""

    left: float
    top: float
    scale: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        return (points - np.array([self.left, self.top], dtype=np.float64)) * self.scale


ImageSource = Path | Callable[[], Image.Image]


def decode(source: ImageSource, size: int, channels: int) -> tuple[np.ndarray, Fit]:
    """Decode to uint8 [C, size, size]: center square crop (faces sit in the middle of the
    official frames, and a crop keeps their aspect ratio), then an antialiased resize."""
    try:
        if callable(source):
            return _fit(source(), size, channels)
        with warnings.catch_warnings():
            # Pillow warns about damaged metadata; only the pixels decide (errors are raised).
            warnings.simplefilter("ignore")
            with Image.open(source) as im:
                im.load()  # raises on truncated data, which Image.open alone does not read
                return _fit(im, size, channels)
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"image too large ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImage(f"unreadable image ({one_line(exc)})") from None


def _fit(im: Image.Image, size: int, channels: int) -> tuple[np.ndarray, Fit]:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float TIFFs: scale to 8 bit instead of clipping everything to white.
        arr = np.asarray(im, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        im = Image.fromarray((arr * (255.0 / hi) if hi > 255 else arr).clip(0, 255).astype(np.uint8))
    im = im.convert("L" if channels == 1 else "RGB")
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    if (w, h) != (side, side):
        im = im.crop((left, top, left + side, top + side))
    if side != size:
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr), Fit(float(left), float(top), size / side)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
