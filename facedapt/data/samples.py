"""The one in-memory form every dataset materializes into.

A dataset plugin's factory returns a :class:`DatasetSource`; the core caches what its
``load()`` returns as a :class:`Samples` (uint8 image store plus label arrays) and every
later stage works on index sets into it.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import attrs
import torch

#: Canonical expression vocabulary. Dataset readers map their native labels onto these
#: indices through an explicit table; -1 means "no label".
EXPRESSIONS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "surprise",
    "fear",
    "anger",
    "disgust",
    "contempt",
)
BASIC_EXPRESSIONS: tuple[str, ...] = EXPRESSIONS[:7]

#: Yaw convention (all datasets): degrees, 0 is frontal, positive when the face is turned
#: toward the viewer's right (the nose moves toward the image's right edge), as in
#: Multi-PIE's camera 05_0 (+15) .. 24_0 (+90). A horizontal flip negates yaw.
YAW_BIN_WIDTH = 15
YAW_BINS = tuple(range(-90, 91, YAW_BIN_WIDTH))  # 13 bins, like Multi-PIE's 13 views
NUM_POSE_BINS = len(YAW_BINS)


def expression_index(name: str) -> int:
    """Index of a canonical expression name (raises KeyError naming the value)."""
    try:
        return EXPRESSIONS.index(name)
    except ValueError:
        raise KeyError(f"unknown expression {name!r}; canonical names: {', '.join(EXPRESSIONS)}") from None


def yaw_to_bin(yaw: torch.Tensor) -> torch.Tensor:
    """Pose bin (0..12) of yaw degrees; -1 where yaw is unknown (NaN)."""
    yaw = torch.as_tensor(yaw, dtype=torch.float32)
    bins = torch.round(yaw.clamp(-90, 90) / YAW_BIN_WIDTH).to(torch.int64) + NUM_POSE_BINS // 2
    return torch.where(torch.isnan(yaw), torch.full_like(bins, -1), bins)


def bin_to_yaw(bins: torch.Tensor) -> torch.Tensor:
    return (torch.as_tensor(bins) - NUM_POSE_BINS // 2).to(torch.float32) * YAW_BIN_WIDTH


def _opt(size: int, fill: float, dtype: torch.dtype) -> torch.Tensor:
    return torch.full((size,), fill, dtype=dtype)


@attrs.define(eq=False)
class Samples:
    """A materialized dataset: N images of one size plus per-image labels.

    Unknown values: expression -1, yaw/pitch NaN, capture -1, intensity NaN.
    ``capture`` groups images taken of one subject with one expression at the same moment
    from several cameras (or rendered so): the pairs cross-pose reconstruction uses.
    """

    images: torch.Tensor  # uint8 [N, C, H, W]
    expression: torch.Tensor  # int64 [N], index into EXPRESSIONS, -1 unknown
    subject: torch.Tensor  # int64 [N], index into subject_ids
    subject_ids: tuple[str, ...]  # string ids, e.g. "F0001", "S005", "7"
    dataset: str
    yaw: torch.Tensor | None = None  # float32 [N] degrees, NaN unknown
    pitch: torch.Tensor | None = None  # float32 [N] degrees, NaN unknown
    capture: torch.Tensor | None = None  # int64 [N], -1 unknown
    intensity: torch.Tensor | None = None  # float32 [N] in [0, 1], NaN unknown
    landmarks: torch.Tensor | None = None  # float32 [N, K, 2] pixel (x, y) in the stored image
    paths: tuple[str, ...] = ()  # source file (or synthetic id) per image, for messages
    problems: list[dict] = attrs.field(factory=list)  # {"path", "problem"} found while reading

    def __attrs_post_init__(self) -> None:
        n = len(self.images)
        if self.yaw is None:
            self.yaw = _opt(n, math.nan, torch.float32)
        if self.pitch is None:
            self.pitch = _opt(n, math.nan, torch.float32)
        if self.capture is None:
            self.capture = _opt(n, -1, torch.int64)
        if self.intensity is None:
            self.intensity = _opt(n, math.nan, torch.float32)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def pose_bin(self) -> torch.Tensor:
        return yaw_to_bin(self.yaw)

    @property
    def has_pose(self) -> bool:
        return bool((~torch.isnan(self.yaw)).any())

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subject_of(self, index: int) -> str:
        return self.subject_ids[int(self.subject[index])]

    def indices_of_subject(self, subject_id: str) -> torch.Tensor:
        return torch.nonzero(self.subject == self.subject_ids.index(subject_id)).flatten()

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every per-image tensor by name (images first); what the cache stores."""
        out = {
            "images": self.images,
            "expression": self.expression,
            "subject": self.subject,
            "yaw": self.yaw,
            "pitch": self.pitch,
            "capture": self.capture,
            "intensity": self.intensity,
        }
        if self.landmarks is not None:
            out["landmarks"] = self.landmarks
        return out


@runtime_checkable
class DatasetSource(Protocol):
    """What a dataset plugin's factory returns.

    ``fingerprint()`` must be cheap (no image decoding): it names the content so the core's
    cache can skip ``load()`` on later runs. ``load()`` decodes everything once.
    """

    name: str

    def fingerprint(self) -> str: ...

    def load(self) -> Samples: ...
