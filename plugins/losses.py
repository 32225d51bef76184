"""Built-in loss terms. Each is an ``nn.Module`` whose constructor arguments are recipe options.

Registered names and call signatures:

- ``cross_entropy``: ``CrossEntropy(label_smoothing=0.0, class_weights=None)``;
  ``forward(logits, target)``. Targets of ``-1`` are ignored (mean over the others, as
  ``F.cross_entropy``); a batch with no valid target gives zero rather than NaN.
- ``domain_adversarial``: ``DomainAdversarial()``;
  ``forward(source_logits, target_logits, source_weight=None, target_weight=None, *,
  mode="discriminator")``. Binary cross-entropy on discriminator logits for P(source):
  ``mode="discriminator"`` labels source 1 and target 0; ``"flipped"`` swaps them (the
  encoder's loss in alternating updates); ``"confused"`` uses 0.5 for both. The two domains
  count equally whatever their batch sizes. Optional per-sample weights (CDAN+E:
  ``1 + exp(-entropy)``) are normalized to mean 1 within each domain.
- ``confusion``: ``Confusion()``; ``forward(logits)``. Cross-entropy between the softmax and
  the uniform distribution, ``-(1/K) sum_k log p_k``; its minimum, ``log K``, is reached
  exactly at the uniform distribution. Pushes a cross classifier's output toward uniform.
- ``entropy``: ``Entropy(reduction="mean", normalize=False)``; ``forward(logits)``. Prediction
  entropy (``reduction="none"`` gives one value per sample, for CDAN+E weights).
- ``l1``: ``L1()``; ``forward(reconstruction, target)``.
- ``ssim``: ``SSIM(window_size=7)``; ``forward(reconstruction, target)``. Structural
  dissimilarity ``(1 - SSIM) / 2`` from kornia on images mapped from ``[-1, 1]`` to ``[0, 1]``.
- ``l1_ssim``: ``L1SSIM(l1_weight=0.15, ssim_weight=0.85, window_size=7)``;
  ``forward(reconstruction, target)``, the weighted sum.

All reductions are means. Reconstruction losses compute in float32 (safe under bf16 autocast).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from facedapt import hookimpl

__all__ = [
    "L1",
    "L1SSIM",
    "SSIM",
    "Confusion",
    "CrossEntropy",
    "DomainAdversarial",
    "Entropy",
    "entropy",
    "facedapt_register_losses",
]

IGNORE_INDEX = -1


class CrossEntropy(nn.Module):
    def __init__(self, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        weight = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Reduced by hand, without a host sync, so that an all-ignored batch gives 0, not NaN.
        target = target.long()
        valid = target != IGNORE_INDEX
        losses = F.cross_entropy(logits.float(), target, weight=self.class_weights, ignore_index=IGNORE_INDEX,
                                 label_smoothing=self.label_smoothing, reduction="none")
        if self.class_weights is None:
            denom = valid.sum()
        else:
            denom = (self.class_weights[target.clamp_min(0)] * valid).sum()
        return losses.sum() / denom.clamp_min(1e-12)


def _weighted_bce(logits: torch.Tensor, label: float, weight: torch.Tensor | None) -> torch.Tensor:
    logits = logits.float().reshape(-1)
    losses = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label), reduction="none")
    if weight is None:
        return losses.mean()
    w = weight.float().reshape(-1)
    return (losses * w).sum() / w.sum().clamp_min(1e-12)


class DomainAdversarial(nn.Module):
    _labels = {"discriminator": (1.0, 0.0), "flipped": (0.0, 1.0), "confused": (0.5, 0.5)}

    def forward(self, source_logits: torch.Tensor, target_logits: torch.Tensor,
                source_weight: torch.Tensor | None = None, target_weight: torch.Tensor | None = None, *,
                mode: Literal["discriminator", "flipped", "confused"] = "discriminator") -> torch.Tensor:
        if mode not in self._labels:
            raise ValueError(f"mode must be one of {', '.join(self._labels)}, got {mode!r}")
        ls, lt = self._labels[mode]
        return 0.5 * (_weighted_bce(source_logits, ls, source_weight) + _weighted_bce(target_logits, lt, target_weight))


class Confusion(nn.Module):
    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return -F.log_softmax(logits.float(), dim=1).mean(dim=1).mean()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy (nats) of ``softmax(logits)``, ``[B]``."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1)


class Entropy(nn.Module):
    def __init__(self, reduction: Literal["mean", "none"] = "mean", normalize: bool = False) -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        self.reduction = reduction
        self.normalize = normalize

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        h = entropy(logits)
        if self.normalize:  # to [0, 1], comparable across class counts
            h = h / math.log(logits.shape[1])
        return h.mean() if self.reduction == "mean" else h


class L1(nn.Module):
    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(reconstruction.float(), target.float())


class SSIM(nn.Module):
    def __init__(self, window_size: int = 7) -> None:
        super().__init__()
        if window_size % 2 == 0 or window_size < 3:
            raise ValueError(f"window_size must be odd and >= 3, got {window_size}")
        self.window_size = window_size

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Images are normalized to [-1, 1]; SSIM's constants assume a known range, here [0, 1].
        a = (reconstruction.float() + 1.0) * 0.5
        b = (target.float() + 1.0) * 0.5
        return kornia.losses.ssim_loss(a, b, self.window_size, max_val=1.0)


class L1SSIM(nn.Module):
    def __init__(self, l1_weight: float = 0.15, ssim_weight: float = 0.85, window_size: int = 7) -> None:
        super().__init__()
        self.l1_weight = l1_weight
        self.ssim_weight = ssim_weight
        self.l1 = L1()
        self.ssim = SSIM(window_size)

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self.l1_weight * self.l1(reconstruction, target)
                + self.ssim_weight * self.ssim(reconstruction, target))


@hookimpl
def facedapt_register_losses(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register("cross_entropy", CrossEntropy)
    registry.register("domain_adversarial", DomainAdversarial)
    registry.register("confusion", Confusion)
    registry.register("entropy", Entropy)
    registry.register("l1", L1)
    registry.register("ssim", SSIM)
    registry.register("l1_ssim", L1SSIM)
