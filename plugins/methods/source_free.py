"""Source-free adaptation: methods that adapt with the target person's unlabelled images alone,
for when the source data is not at hand (a trained model, e.g. a real-photo classifier, and one
person's photos).

``tent``: TENT (Wang et al., "Tent: Fully Test-Time Adaptation by Entropy Minimization", ICLR
2021). At adaptation only the normalization layers' affine parameters train, to minimize the
entropy of the expression predictions on target batches; normalization uses the target batch's
statistics in each step, which also move the target's running statistics (kept per domain, as
in every method here). With ``adabn`` the target statistics are first recomputed on the
person's images. A source phase (``train.source_steps > 0``, where source data is at hand)
trains as source-only does; the adaptation step never reads the source batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from facedapt_plugins.layers import DomainBatchNorm
from facedapt_plugins.losses import entropy
from facedapt_plugins.methods.networks import TRUNK, Networks
from torch import nn

from facedapt.method import StepBatch

#: Normalization layers whose affine parameters TENT trains.
NORM_LAYERS = (DomainBatchNorm, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def affine_parameters(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """The weight and bias of every normalization layer in ``modules``."""
    out = []
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, NORM_LAYERS):
                out += [p for name, p in layer.named_parameters(recurse=False) if name.startswith(("weight", "bias"))]
    return out


class Tent(Networks):
    """Entropy minimization on the normalization layers' affine parameters (source-free)."""

    def __init__(self, feature_dim: int = 128, adabn: bool = True, label_smoothing: float = 0.0) -> None:
        super().__init__([], feature_dim=feature_dim, norm="per_domain", pose_branch=False, adabn=adabn, adapts=True,
                         label_smoothing=label_smoothing)

    def trainable_parameters(self, names: list[str], phase: str) -> list[nn.Parameter]:
        """Adapting: the affine parameters of the trunk's normalization layers, nothing else
        (frozen, so that no gradient is computed for it); otherwise everything."""
        modules = [self.models[n] for n in names]
        if phase != "adapt":
            for module in modules:
                module.requires_grad_(True)
            return super().trainable_parameters(names, phase)
        keep = {id(p) for p in affine_parameters(self.models[n] for n in names if n in TRUNK)}
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(id(p) in keep)
        return [p for module in modules for p in module.parameters() if id(p) in keep]

    def train_step(self, batch: StepBatch, ctx: Any) -> dict[str, torch.Tensor]:
        if batch.target is None:  # the source phase: source-only training
            return super().train_step(batch, ctx)
        with ctx.autocast():
            loss = entropy(self.predict(batch.target.images, "target")).mean()
        ctx.update(loss, "main", {"entropy": loss})
        return {"entropy": loss.detach(), "loss": loss.detach()}
