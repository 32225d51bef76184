"""Action-unit-like movements, the basic expressions built from them, and personal style."""

from __future__ import annotations

import attrs
import torch

from facedapt.data.samples import EXPRESSIONS

from . import randomness as rnd

#: Movements, loosely after FACS action units (AU numbers in comments).
ACTION_UNITS: tuple[str, ...] = (
    "brow_inner_raise",  # AU1
    "brow_outer_raise",  # AU2
    "brow_lower",  # AU4: brows down and drawn together
    "eye_widen",  # AU5
    "eye_squint",  # AU6/7: cheeks up, lids narrowed
    "nose_wrinkle",  # AU9
    "upper_lip_raise",  # AU10
    "lip_corner_pull",  # AU12
    "lip_corner_depress",  # AU15
    "lip_stretch",  # AU20
    "lip_press",  # AU23/24
    "jaw_drop",  # AU26/27
)
AU = {name: i for i, name in enumerate(ACTION_UNITS)}

#: Canonical (prototype) activation of each movement per expression at full intensity.
_PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"lip_corner_pull": 1.5, "eye_squint": 1.2, "upper_lip_raise": 1.5},
    "sad": {"brow_inner_raise": 1.5, "lip_corner_depress": 1.5, "eye_squint": 1.5, "lip_press": 0.2},
    "surprise": {"brow_inner_raise": 1.15, "brow_outer_raise": 1.4, "eye_widen": 1.5, "jaw_drop": 1.5},
    "fear": {"brow_inner_raise": 1.5, "eye_widen": 1.5, "eye_squint": 0.25, "lip_stretch": 1.5,
             "lip_corner_depress": 1.5},
    "anger": {"brow_lower": 1.5, "eye_squint": 1.5, "lip_press": 1.5, "lip_corner_depress": 1.5,
              "nose_wrinkle": 0.55, "upper_lip_raise": 0.55, "lip_stretch": 0.3},
    "disgust": {"nose_wrinkle": 1.0, "upper_lip_raise": 1.0, "brow_lower": 0.6, "eye_squint": 0.6,
                "lip_corner_depress": 0.4},
}


def prototype_table() -> torch.Tensor:
    """float32 [7, num_AUs], rows in canonical EXPRESSIONS order."""
    table = torch.zeros(7, len(ACTION_UNITS))
    for name, units in _PROTOTYPES.items():
        for unit, value in units.items():
            table[EXPRESSIONS.index(name), AU[unit]] = value
    return table


@attrs.frozen
class Style:
    """How each subject expresses: [S, A] gains and habits, [S, 7, A] deviations, [S] asymmetry."""

    gain: torch.Tensor  # multiplies each movement of every expression
    deviation: torch.Tensor  # subject's own additions/removals per expression and movement
    habit: torch.Tensor  # resting-face activation present in every capture, neutral included
    asymmetry: torch.Tensor  # one-sided lip corner pull (a smirk habit), signed


def sample_style(seed: int, subjects: torch.Tensor, strength: float) -> Style:
    a = len(ACTION_UNITS)
    s = float(strength)
    gain = torch.exp(0.5 * s * rnd.normal(seed, 21, subjects, a))
    deviation = 0.35 * s * rnd.normal(seed, 22, subjects, 7 * a).view(-1, 7, a)
    deviation[:, EXPRESSIONS.index("neutral")] = 0.0
    has_habit = rnd.uniform(seed, 23, subjects, a) < 0.4
    habit = 0.3 * s * rnd.normal(seed, 24, subjects, a).abs() * has_habit
    asymmetry = 0.3 * s * rnd.normal(seed, 25, subjects, 1)[:, 0]
    return Style(gain, deviation, habit, asymmetry)


def activations(style: Style, subject: torch.Tensor, expression: torch.Tensor, intensity: torch.Tensor,
                jitter: torch.Tensor) -> torch.Tensor:
    """float32 [N, A] movement activations of N captures, clamped to [0, 1.4]."""
    proto = prototype_table()[expression]
    expressive = proto * style.gain[subject] + style.deviation[subject, expression]
    act = intensity[:, None] * expressive + style.habit[subject] + 0.06 * jitter
    return act.clamp(0.0, 1.4)


def extreme_activations() -> torch.Tensor:
    """[4, A]: no movement and every movement at its clamp, twice (pairs with ``extreme_shapes``)."""
    top = torch.full((len(ACTION_UNITS),), 1.4)
    return torch.stack([torch.zeros_like(top), top, torch.zeros_like(top), top])
