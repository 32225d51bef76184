"""Built-in domain discriminators: features -> one logit per sample for P(source).

Registered names (engine-supplied arguments marked *):

- ``mlp``: ``MLPDiscriminator(in_features*, hidden=1024, depth=2, dropout=0.5, norm="batch",
  spectral_norm=False)``; ``forward(features) -> logits [B]``.
- ``conditional``: ``ConditionalDiscriminator(in_features*, num_classes*, hidden=1024, depth=2,
  dropout=0.5, norm="batch", spectral_norm=False, randomized=None, randomized_dim=1024,
  randomized_threshold=4096, detach_predictions=True, seed=0)``;
  ``forward(features, logits) -> logits [B]``. CDAN: the discriminator sees the multilinear
  map ``f outer softmax(logits)``, or the randomized multilinear map ``(R_f f) * (R_g g) /
  sqrt(d)`` when ``randomized`` is True, or None and ``in_features * num_classes`` exceeds
  ``randomized_threshold``.

Gradient reversal is not inside: the method applies :class:`facedapt_plugins.layers.
GradientReversalLayer` to the features (or trains by alternating updates). With
``norm="batch"`` feed source and target as one concatenated batch, so both are normalized
with the same statistics.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from facedapt import hookimpl

from .heads import mlp_layers

__all__ = ["ConditionalDiscriminator", "MLPDiscriminator", "facedapt_register_discriminators", "multilinear_map"]


class MLPDiscriminator(nn.Module):
    """``depth`` hidden layers of Linear(-BN)-ReLU-dropout, then a linear map to one logit."""

    def __init__(self, in_features: int, hidden: int = 1024, depth: int = 2, dropout: float = 0.5,
                 norm: Literal["batch", "none"] = "batch", spectral_norm: bool = False) -> None:
        super().__init__()
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        layers, _ = mlp_layers(in_features, [hidden] * depth + [1], norm, dropout, last_activation=False,
                               wrap=_spectral_norm if spectral_norm else None)
        self.net = nn.Sequential(*layers)
        self.in_features = in_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


def multilinear_map(features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Flattened outer product ``[B, F] x [B, C] -> [B, C * F]``."""
    return torch.bmm(probs.unsqueeze(2), features.unsqueeze(1)).flatten(1)


class ConditionalDiscriminator(nn.Module):
    """CDAN discriminator conditioned on the classifier's predictions (see module docstring).

    The random matrices of the randomized map are fixed buffers drawn from a private generator
    seeded with ``seed``: they depend on ``seed`` alone (not on the global RNG state), take
    nothing from the global stream, and a checkpoint holds them.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 1024, depth: int = 2,
                 dropout: float = 0.5, norm: Literal["batch", "none"] = "batch", spectral_norm: bool = False,
                 randomized: bool | None = None, randomized_dim: int = 1024, randomized_threshold: int = 4096,
                 detach_predictions: bool = True, seed: int = 0) -> None:
        super().__init__()
        if randomized is None:
            randomized = in_features * num_classes > randomized_threshold
        self.randomized = randomized
        self.in_features = in_features
        self.num_classes = num_classes
        self.detach_predictions = detach_predictions
        if randomized:
            gen = torch.Generator().manual_seed(seed)
            self.register_buffer("rf", torch.randn(in_features, randomized_dim, generator=gen))
            self.register_buffer("rg", torch.randn(num_classes, randomized_dim, generator=gen))
            self.randomized_dim = randomized_dim
            map_dim = randomized_dim
        else:
            map_dim = in_features * num_classes
        self.map_dim = map_dim
        self.discriminator = MLPDiscriminator(map_dim, hidden, depth, dropout, norm, spectral_norm)

    def conditioning(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The discriminator's input for ``features`` and classifier ``logits``."""
        probs = F.softmax(logits.float(), dim=1).to(features.dtype)
        if self.detach_predictions:
            # As in CDAN: the conditioning tells D which class, it is not a path for the classifier.
            probs = probs.detach()
        if self.randomized:
            f = features @ self.rf.to(features.dtype)
            g = probs @ self.rg.to(features.dtype)
            return f * g / math.sqrt(self.randomized_dim)
        return multilinear_map(features, probs)

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.discriminator(self.conditioning(features, logits))


@hookimpl
def facedapt_register_discriminators(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register("mlp", MLPDiscriminator)
    registry.register("conditional", ConditionalDiscriminator)
