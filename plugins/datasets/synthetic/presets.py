"""Named configurations of the synthetic generator, with their difficulty dials."""

from __future__ import annotations

import attrs

from facedapt.data.samples import BASIC_EXPRESSIONS, EXPRESSIONS
from facedapt.errors import RecipeError


LIGHT_FRAMES = ("world", "head")


@attrs.frozen
class SyntheticPreset:
    """Everything that decides what is generated (besides the seed)."""

    name: str
    image_size: int = 64
    num_subjects: int = 36
    expressions: tuple[str, ...] = BASIC_EXPRESSIONS
    #: Captures per subject and non-neutral expression. With ``intensity_levels`` empty the
    #: intensities are drawn uniformly from [intensity_min, 1]; otherwise they are the levels.
    intensity_samples: int = 2
    intensity_levels: tuple[float, ...] = ()
    intensity_min: float = 0.4
    #: Neutral captures per subject (0: as many as the other expressions).
    neutral_captures: int = 0
    yaw_range: float = 90.0  # views from -yaw_range to +yaw_range
    yaw_step: float = 15.0
    pitches: tuple[float, ...] = (0.0,)
    # Difficulty dials.
    style_strength: float = 1.0  # personal style of expressing (0: everyone alike)
    lighting: float = 0.6  # 0: frontal light only; 1: strong light from any side
    #: Where the light is fixed: "world" (turning the head changes its shading, as in a
    #: multi-camera studio) or "head" (the light turns with the head; synthetic-faces-2).
    light: str = "world"
    noise: float = 0.5  # sensor noise (1 ~ 4% of full scale)
    jitter: float = 1.0  # small shifts and scales of the face in the frame
    background: float = 1.0  # 0: plain grey; 1: random coloured gradients

    @property
    def yaws(self) -> tuple[float, ...]:
        n = int(round(self.yaw_range / self.yaw_step))
        return tuple(float(i * self.yaw_step) for i in range(-n, n + 1))

    def validate(self) -> None:
        def bad(arg: str, want: str, got: object) -> RecipeError:
            return RecipeError(f"synthetic dataset: {arg} must be {want}, got {got!r}")

        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise bad("image_size", "an integer >= 16", self.image_size)
        if not isinstance(self.num_subjects, int) or self.num_subjects < 2:
            raise bad("num_subjects", "an integer >= 2", self.num_subjects)
        if self.num_subjects > 9999:
            raise bad("num_subjects", "at most 9999", self.num_subjects)
        unknown = [e for e in self.expressions if e not in EXPRESSIONS[:7]]
        if unknown or len(self.expressions) < 2:
            raise bad("expressions", f"two or more of {', '.join(BASIC_EXPRESSIONS)}", self.expressions)
        if not isinstance(self.intensity_samples, int) or self.intensity_samples < 1:
            raise bad("intensity_samples", "an integer >= 1", self.intensity_samples)
        if any(not 0.0 < v <= 1.0 for v in self.intensity_levels):
            raise bad("intensity_levels", "values in (0, 1]", self.intensity_levels)
        if not 0.0 < self.intensity_min <= 1.0:
            raise bad("intensity_min", "in (0, 1]", self.intensity_min)
        if not 0.0 <= self.yaw_range <= 90.0:
            raise bad("yaw_range", "between 0 and 90 degrees", self.yaw_range)
        if not 0.0 < self.yaw_step <= 90.0:
            raise bad("yaw_step", "between 0 and 90 degrees", self.yaw_step)
        if not self.pitches or any(abs(p) > 45.0 for p in self.pitches):
            raise bad("pitches", "one or more angles within +-45 degrees", self.pitches)
        if self.light not in LIGHT_FRAMES:
            raise bad("light", " or ".join(LIGHT_FRAMES), self.light)
        for dial, top in (("style_strength", 3.0), ("lighting", 1.0), ("noise", 4.0), ("jitter", 3.0),
                          ("background", 1.0)):
            value = getattr(self, dial)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= top:
                raise bad(dial, f"a number between 0 and {top}", value)

    @property
    def captures_per_subject(self) -> int:
        per_expr = len(self.intensity_levels) or self.intensity_samples
        neutral = self.neutral_captures or per_expr
        return sum(neutral if e == "neutral" else per_expr for e in self.expressions)

    @property
    def num_images(self) -> int:
        return self.num_subjects * self.captures_per_subject * len(self.yaws) * len(self.pitches)


PRESETS: dict[str, SyntheticPreset] = {
    # The main recipe's data: 36 x 7 x 2 x 13 = 6,552 RGB faces at 64x64.
    "default": SyntheticPreset(name="default"),
    # For tests: 6 x 7 x 1 x 5 = 210 faces at 32x32.
    "tiny": SyntheticPreset(name="tiny", image_size=32, num_subjects=6, intensity_samples=1,
                            yaw_range=90.0, yaw_step=45.0),
    # Multi-PIE-like: 13 views, the expressions Multi-PIE shares with the basic set, more people.
    "multipie": SyntheticPreset(name="multipie", num_subjects=80,
                                expressions=("neutral", "happy", "surprise", "disgust"),
                                intensity_samples=2),
    # BU-3DFE-like: 6 expressions at 4 intensity levels plus one neutral, rendered views +-45.
    "bu3dfe": SyntheticPreset(name="bu3dfe", num_subjects=50, intensity_levels=(0.25, 0.5, 0.75, 1.0),
                              neutral_captures=1, yaw_range=45.0),
}


def resolve(preset: str, overrides: dict[str, object]) -> SyntheticPreset:
    """The named preset with the non-None overrides applied, validated."""
    if not isinstance(preset, str) or preset not in PRESETS:
        raise RecipeError(f"synthetic dataset: unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    fields = attrs.fields_dict(SyntheticPreset)
    changes = {k: v for k, v in overrides.items() if v is not None}
    for key in changes:
        if key not in fields or key == "name":
            raise RecipeError(f"synthetic dataset: unknown argument {key!r}")
    for key in ("expressions", "intensity_levels", "pitches"):
        if key in changes and not isinstance(changes[key], str):
            changes[key] = tuple(changes[key])  # recipes give lists
    resolved = attrs.evolve(PRESETS[preset], **changes)
    resolved.validate()
    return resolved
