"""Built-in heads: encoders and classifiers on backbone features.

Registered names (engine-supplied arguments marked *):

- ``mlp``: ``MLPEncoder(in_features*, out_features=256, hidden=(512,), norm="batch",
  dropout=0.0, output_activation=True)``, the expression encoder ``E_e`` and the pose encoder
  ``E_p``. ``out_features`` is a recipe choice (the feature size); read it back from
  ``.out_features`` when building the heads that follow.
- ``linear``: ``LinearClassifier(in_features*, num_classes*, dropout=0.0, bias=True)``, the
  classifiers ``C_e``, ``C_p`` and the cross classifiers ``X_p``, ``X_e``.
- ``mlp_classifier``: ``MLPClassifier(in_features*, num_classes*, hidden=(256,), norm="none",
  dropout=0.0)``, a classifier with hidden layers (the cross classifiers with
  ``method.cross_hidden``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from facedapt import hookimpl

__all__ = ["LinearClassifier", "MLPClassifier", "MLPEncoder", "facedapt_register_heads", "mlp_layers"]


def mlp_layers(in_features: int, widths: Sequence[int], norm: str = "batch", dropout: float = 0.0,
               last_activation: bool = True,
               wrap: Callable[[nn.Linear], nn.Module] | None = None) -> tuple[list[nn.Module], int]:
    """Linear(-BN)-ReLU(-dropout) layers through ``widths``; returns (layers, last width).

    With ``last_activation=False`` the last layer is a bare linear map. ``wrap`` is applied to
    every linear map (e.g. spectral normalization).
    """
    if norm not in ("batch", "none"):
        raise ValueError(f"norm must be 'batch' or 'none', got {norm!r}")
    linear = wrap or (lambda m: m)
    layers: list[nn.Module] = []
    cin = in_features
    for i, cout in enumerate(widths):
        last = i == len(widths) - 1
        if last and not last_activation:
            layers.append(linear(nn.Linear(cin, cout)))
        else:
            # BN follows the linear map, so its bias would be redundant.
            layers.append(linear(nn.Linear(cin, cout, bias=norm == "none")))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(cout))
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        cin = cout
    return layers, cin


class MLPEncoder(nn.Module):
    """``in_features -> hidden... -> out_features`` MLP.

    ``hidden``: widths of the hidden layers (an int for one, empty for a single linear layer).
    ``output_activation``: whether the output layer also gets BN/ReLU/dropout (True: a
    bottleneck whose output feeds classifiers and discriminators, as in DANN/CDAN).
    """

    def __init__(self, in_features: int, out_features: int = 256, hidden: int | Sequence[int] = (512,),
                 norm: Literal["batch", "none"] = "batch", dropout: float = 0.0,
                 output_activation: bool = True) -> None:
        super().__init__()
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        layers, _ = mlp_layers(in_features, [*widths, out_features], norm, dropout, output_activation)
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LinearClassifier(nn.Module):
    """``in_features -> num_classes`` logits (optional dropout before the linear map)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes, bias=bias)
        self.in_features = in_features
        self.num_classes = num_classes
        self.out_features = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(x))


class MLPClassifier(nn.Module):
    """``in_features -> hidden... -> num_classes`` logits. Without normalization by default: a
    cross classifier is scored on held-out features in eval mode, where batch-norm running
    statistics would lag features that keep moving."""

    def __init__(self, in_features: int, num_classes: int, hidden: int | Sequence[int] = (256,),
                 norm: Literal["batch", "none"] = "none", dropout: float = 0.0) -> None:
        super().__init__()
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        layers, _ = mlp_layers(in_features, [*widths, num_classes], norm, dropout, last_activation=False)
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        self.num_classes = num_classes
        self.out_features = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@hookimpl
def facedapt_register_heads(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register("mlp", MLPEncoder)
    registry.register("linear", LinearClassifier)
    registry.register("mlp_classifier", MLPClassifier)
