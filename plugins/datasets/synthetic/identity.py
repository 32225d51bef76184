"""Who a subject is: face shape and appearance, drawn from (seed, subject index)."""

from __future__ import annotations

import attrs
import torch

from . import randomness as rnd

# Palettes the colours are interpolated from (RGB in [0, 1]).
_SKIN = torch.tensor([[0.96, 0.82, 0.72], [0.86, 0.66, 0.52], [0.66, 0.46, 0.33], [0.42, 0.28, 0.20]])
_HAIR = torch.tensor([[0.08, 0.06, 0.05], [0.30, 0.18, 0.10], [0.62, 0.46, 0.26], [0.55, 0.53, 0.50],
                      [0.45, 0.20, 0.10]])
_IRIS = torch.tensor([[0.25, 0.15, 0.08], [0.20, 0.35, 0.55], [0.30, 0.40, 0.25]])

#: Shape fields and the uniform range each is drawn from.
_RANGES: dict[str, tuple[float, float]] = {
    "face_width": (0.9, 1.1),
    "face_length": (0.92, 1.1),
    "jaw_taper": (0.12, 0.42),
    "eye_spacing": (0.9, 1.1),
    "eye_size": (0.85, 1.15),
    "nose_length": (0.85, 1.15),
    "nose_width": (0.85, 1.25),
    "nose_height": (0.75, 1.25),
    "brow_thickness": (0.7, 1.3),
    "brow_height": (-0.03, 0.03),
    "brow_arch": (0.0, 1.0),
    "mouth_width": (0.85, 1.15),
    "lip_thickness": (0.7, 1.3),
    "hairline": (0.42, 0.62),
    "hair_length": (-0.55, 0.15),
    "brightness": (0.88, 1.08),
}


def _palette(colors: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation through palette rows, t in [0, 1)."""
    pos = t * (len(colors) - 1)
    lo = pos.floor().long().clamp(max=len(colors) - 2)
    frac = (pos - lo)[:, None]
    return colors[lo] * (1 - frac) + colors[lo + 1] * frac


@attrs.frozen
class Identity:
    """Per-subject tensors [S] (colours [S, 3])."""

    shape: dict[str, torch.Tensor]
    skin: torch.Tensor
    hair: torch.Tensor
    iris: torch.Tensor

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self.shape[name]
        except KeyError:
            raise AttributeError(name) from None


def sample_identity(seed: int, subjects: torch.Tensor) -> Identity:
    u = rnd.uniform(seed, 11, subjects, len(_RANGES) + 3)
    shape = {name: lo + (hi - lo) * u[:, i] for i, (name, (lo, hi)) in enumerate(_RANGES.items())}
    k = len(_RANGES)
    skin = _palette(_SKIN, u[:, k]) * shape["brightness"][:, None]
    return Identity(shape=shape, skin=skin, hair=_palette(_HAIR, u[:, k + 1]), iris=_palette(_IRIS, u[:, k + 2]))


def extreme_shapes() -> dict[str, torch.Tensor]:
    """Shape fields [4] at (low, low, high, high) ends of their ranges: bounds for how far apart
    the template points can land (see ``face.view_points``)."""
    return {name: torch.tensor([lo, lo, hi, hi]) for name, (lo, hi) in _RANGES.items()}
