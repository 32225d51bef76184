"""Built-in backbones: normalized image batch ``[B, C, H, W]`` -> features ``[B, out_features]``.

Registered names (``in_channels`` and ``image_size`` are supplied by the engine; every other
argument is a recipe option):

- ``convnet``: ``ConvNet(in_channels, image_size, width=32, norm="batch", dropout=0.0)``,
  four conv-BN-ReLU-pool blocks, for 64 px faces; ``out_features = 8 * width``.
- ``resnet18``: ``ResNet18(in_channels, image_size, width=64, stem="auto", norm="batch",
  blocks=(2, 2, 2, 2), zero_init_residual=False)``; ``out_features = 8 * width``.
- ``ir50``: ``IR50(in_channels, image_size, width=64, out_features=512, head="fc", norm="batch",
  dropout=0.0, blocks=(3, 4, 14, 3))``, the improved-residual face network of ArcFace, for
  112 px faces.

Every backbone exposes ``.out_features`` and works with channels_last tensors and bf16
autocast. ``norm="none"`` drops batch norm (convolutions get biases instead), e.g. for
per-sample-gradient or tiny-batch experiments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from facedapt import hookimpl

Norm = Literal["batch", "none"]

__all__ = ["IR50", "ConvNet", "ResNet18", "facedapt_register_backbones"]


def _check_norm(norm: str) -> None:
    if norm not in ("batch", "none"):
        raise ValueError(f"norm must be 'batch' or 'none', got {norm!r}")


def _bn2d(channels: int, norm: str) -> nn.Module:
    return nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()


def _bn1d(features: int, norm: str) -> nn.Module:
    return nn.BatchNorm1d(features) if norm == "batch" else nn.Identity()


def _conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- convnet
class ConvNet(nn.Module):
    """Small 4-block conv net: (conv3x3-BN-ReLU-maxpool2) x 4, global average pool.

    Channels ``width, 2w, 4w, 8w``; at 64 px the last block sees 4x4 maps.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 64, width: int = 32, norm: Norm = "batch",
                 dropout: float = 0.0) -> None:
        super().__init__()
        _check_norm(norm)
        if image_size < 16:
            raise ValueError(f"convnet needs images of at least 16 px (four 2x poolings), got {image_size}")
        chans = [in_channels, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [_conv3x3(cin, cout, bias=norm == "none"), _bn2d(cout, norm), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_features = chans[-1]
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.flatten(self.pool(self.features(x)), 1))


# --------------------------------------------------------------------------- resnet18
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1, norm: str = "batch") -> None:
        super().__init__()
        bias = norm == "none"
        self.conv1 = _conv3x3(cin, cout, stride, bias=bias)
        self.bn1 = _bn2d(cout, norm)
        self.conv2 = _conv3x3(cout, cout, bias=bias)
        self.bn2 = _bn2d(cout, norm)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=bias), _bn2d(cout, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 layout (BasicBlocks ``[2, 2, 2, 2]``) with a stem chosen for the input size.

    ``stem="standard"``: 7x7/2 conv + 3x3/2 max pool (ImageNet; 112 px -> 28 px maps).
    ``stem="small"``: one 3x3/1 conv, no pooling (CIFAR style; keeps resolution for 32-64 px,
    at four times the compute of ``standard`` per pixel of the first stage).
    ``stem="auto"``: ``small`` up to 64 px, ``standard`` above.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 64, width: int = 64,
                 stem: Literal["auto", "standard", "small"] = "auto", norm: Norm = "batch",
                 blocks: Sequence[int] = (2, 2, 2, 2), zero_init_residual: bool = False) -> None:
        super().__init__()
        _check_norm(norm)
        if stem == "auto":
            stem = "small" if image_size <= 64 else "standard"
        bias = norm == "none"
        if stem == "standard":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=bias),
                                      _bn2d(width, norm), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        elif stem == "small":
            self.stem = nn.Sequential(_conv3x3(in_channels, width, bias=bias), _bn2d(width, norm),
                                      nn.ReLU(inplace=True))
        else:
            raise ValueError(f"stem must be 'auto', 'standard' or 'small', got {stem!r}")
        self.stem_kind = stem
        stages: list[nn.Module] = []
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            units = [BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1, norm)
                     for j in range(n)]
            stages.append(nn.Sequential(*units))
            cin = cout
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = cin
        _init_weights(self)
        if zero_init_residual and norm == "batch":
            # Each residual branch starts as zero, so the block starts as identity (Goyal et al.).
            for m in self.modules():
                if isinstance(m, BasicBlock) and isinstance(m.bn2, nn.BatchNorm2d):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.layers(self.stem(x))), 1)


# --------------------------------------------------------------------------- ir50
class IRBlock(nn.Module):
    """Improved residual unit: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN, plus a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str = "batch") -> None:
        super().__init__()
        bias = norm == "none"
        self.residual = nn.Sequential(
            _bn2d(cin, norm), _conv3x3(cin, cout, bias=bias), _bn2d(cout, norm), nn.PReLU(cout),
            _conv3x3(cout, cout, stride, bias=bias), _bn2d(cout, norm),
        )
        if cin == cout:
            # Subsampling identity: a 1x1 max pool with stride is a strided pick, as in ArcFace nets.
            self.shortcut: nn.Module = nn.MaxPool2d(1, stride) if stride > 1 else nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=bias), _bn2d(cout, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class IR50(nn.Module):
    """IR-50 (units ``[3, 4, 14, 3]``, channels ``w, 2w, 4w, 8w``), the ArcFace-style face trunk.

    Input layer conv3x3/1-BN-PReLU keeps full resolution; each stage halves it, so 112 px
    gives 7x7 maps. ``head="fc"``: BN-dropout-flatten-linear-BN to ``out_features`` (the
    usual face-embedding head; needs ``image_size`` divisible by 16). ``head="avg"``: global
    average pool then linear-BN, for any input size.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 112, width: int = 64, out_features: int = 512,
                 head: Literal["fc", "avg"] = "fc", norm: Norm = "batch", dropout: float = 0.0,
                 blocks: Sequence[int] = (3, 4, 14, 3)) -> None:
        super().__init__()
        _check_norm(norm)
        bias = norm == "none"
        self.input_layer = nn.Sequential(_conv3x3(in_channels, width, bias=bias), _bn2d(width, norm),
                                         nn.PReLU(width))
        units: list[nn.Module] = []
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            for j in range(n):
                units.append(IRBlock(cin, cout, 2 if j == 0 else 1, norm))
                cin = cout
        self.body = nn.Sequential(*units)
        stride = 2 ** len(blocks)
        if head == "fc":
            if image_size % stride:
                raise ValueError(f"ir50 head='fc' needs image_size divisible by {stride}, got {image_size}; "
                                 "use head='avg'")
            side = image_size // stride
            self.output_layer = nn.Sequential(
                _bn2d(cin, norm), nn.Dropout(dropout), nn.Flatten(),
                nn.Linear(cin * side * side, out_features), _bn1d(out_features, norm),
            )
        elif head == "avg":
            self.output_layer = nn.Sequential(
                _bn2d(cin, norm), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                nn.Linear(cin, out_features), _bn1d(out_features, norm),
            )
        else:
            raise ValueError(f"head must be 'fc' or 'avg', got {head!r}")
        self.out_features = out_features
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(x)))


@hookimpl
def facedapt_register_backbones(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register("convnet", ConvNet)
    registry.register("resnet18", ResNet18)
    registry.register("ir50", IR50)
