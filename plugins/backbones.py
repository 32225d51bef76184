"""Built-in backbones: normalized image batch ``[B, C, H, W]`` -> features ``[B, out_features]``.

Registered names (``in_channels`` and ``image_size`` are supplied by the engine; every other
argument is a recipe option):

- ``convnet``: ``ConvNet(in_channels, image_size, width=32, norm="batch", dropout=0.0)``,
  four conv-BN-ReLU-pool blocks, for 64 px faces; ``out_features = 8 * width``.
- ``resnet18``: ``ResNet18(in_channels, image_size, width=64, stem="auto", norm="batch",
  blocks=(2, 2, 2, 2), zero_init_residual=False, weights=None, strict=True)``;
  ``out_features = 8 * width``.
- ``resnet50``: ``ResNet50(...)``, the same with bottleneck blocks ``(3, 4, 6, 3)``;
  ``out_features = 32 * width``.
- ``ir50``: ``IR50(in_channels, image_size, width=64, out_features=512, head="fc", norm="batch",
  dropout=0.0, blocks=(3, 4, 14, 3), unit="bn_prelu", weights=None, strict=True)``, the
  improved-residual face network of ArcFace, for 112 px faces.

``weights``: a state dict file to start from (read with ``torch.load(weights_only=True)``):
torchvision's key layout for the ResNets (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``,
..., ``fc.*`` ignored) and the usual layout of public IR-50 face-recognition checkpoints
(``input_layer.*``, ``body.N.res_layer.*``, ``body.N.shortcut_layer.*``, ``output_layer.*``).
Names are mapped, every shape is checked, and one line logs how many tensors loaded, were
missing and were unexpected; ``strict`` turns missing or unexpected tensors into an error. With
weights the backbone's first layer converts the engine's input to the convention the weights
expect (ImageNet mean and std for the ResNets; see facedapt.data.batches.InputConvention).

Every backbone exposes ``.out_features`` and works with channels_last tensors and bf16
autocast. ``norm="none"`` drops batch norm (convolutions get biases instead), e.g. for
per-sample-gradient or tiny-batch experiments.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from loguru import logger
from torch import nn

from facedapt import hookimpl
from facedapt.data.batches import CANONICAL, InputAdapter, InputConvention
from facedapt.errors import CheckpointError

Norm = Literal["batch", "none"]

__all__ = ["IMAGENET", "IR50", "ConvNet", "ResNet", "ResNet18", "ResNet50", "facedapt_register_backbones",
           "load_pretrained"]

#: torchvision's ImageNet weights: RGB, per-channel mean and std of ImageNet, trained at 224 px.
IMAGENET = InputConvention("imagenet", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), channels="rgb",
                           size=None, trained_on="ImageNet (torchvision weights)")
#: Public IR-50 face-recognition checkpoints (face.evoLVe, InsightFace_Pytorch, TFace): RGB in
#: [-1, 1] (mean 0.5, std 0.5), aligned 112 px faces.
FACE_RECOGNITION = InputConvention("face_recognition", mean=(0.5,), std=(0.5,), channels="rgb", size=112,
                                   trained_on="face recognition (IR-50 weights)")
#: A file key deliberately left out (e.g. the ImageNet classifier ``fc.*``).
IGNORE = ""


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


# --------------------------------------------------------------------------- pretrained weights
def read_state_file(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a weights file: a plain one, or one under ``state_dict`` / ``model``,
    with DataParallel's ``module.`` prefix removed. Errors name the file and the first bad key."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file ({what} weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickle with code, not a torch file
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable weights file ({first})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: holds no state dict (a dict of tensors), got {type(state).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: key {key!r} is not a tensor ({type(value).__name__})")
        out[key[len("module."):] if str(key).startswith("module.") else str(key)] = value
    return out


def load_pretrained(model: nn.Module, path: str | os.PathLike, rename: Callable[[str], str], *, strict: bool,
                    what: str, hint: Callable[[dict[str, torch.Tensor]], str] | None = None) -> dict[str, int]:
    """Load a weights file into ``model``: each file key renamed to the model's (``IGNORE``: left
    out on purpose), every shape checked. Missing running-count buffers (files from before
    torch 0.4.1 have none) are not counted. Returns and logs the counts."""
    state = read_state_file(path, what)
    own = model.state_dict()
    skip = {k for k in own if k.endswith("num_batches_tracked") or k.startswith("input_adapter.")}
    take: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    ignored = 0
    for key, value in state.items():
        name = rename(key)
        if name == IGNORE:
            ignored += 1
        elif name not in own:
            unexpected.append(key)
        elif tuple(own[name].shape) != tuple(value.shape):
            extra = f"; {hint(state)}" if hint else ""
            raise CheckpointError(f"{path}: key {key!r} has shape {list(value.shape)} but {what} expects "
                                  f"{list(own[name].shape)} for it{extra}")
        else:
            take[name] = value
    missing = [k for k in own if k not in take and k not in skip]
    if strict and (missing or unexpected):
        first = (f"key {unexpected[0]!r} has no place in {what}" if unexpected
                 else f"no key for {what}'s {missing[0]!r}")
        extra = f"; {hint(state)}" if hint else ""
        raise CheckpointError(f"{path}: {first} ({len(missing)} missing, {len(unexpected)} unexpected; "
                              f"strict=false loads what fits){extra}")
    with torch.no_grad():
        for name, value in take.items():
            own[name].copy_(value.to(own[name].dtype))
    counts = {"loaded": len(take), "missing": len(missing), "unexpected": len(unexpected), "ignored": ignored}
    logger.info("{} weights from {}: {} loaded, {} missing, {} unexpected, {} ignored", what, path, counts["loaded"],
                counts["missing"], counts["unexpected"], counts["ignored"])
    return counts


class Pretrained:
    """Mixin for backbones that may start from a weights file: an InputAdapter first when the
    weights expect another input than the engine's canonical one."""

    input_adapter: nn.Module

    def _input_layer(self, convention: InputConvention, in_channels: int) -> int:
        """Install the adapter for ``convention``; returns the channel count the network sees."""
        if convention == CANONICAL:
            self.input_adapter = nn.Identity()  # no state: models trained from scratch save as before
            return in_channels
        self.input_adapter = InputAdapter(convention)
        return convention.num_channels

    @property
    def input_convention(self) -> InputConvention:
        adapter = self.input_adapter
        return adapter.convention if isinstance(adapter, InputAdapter) else CANONICAL

    @staticmethod
    def _check_size(what: str, convention: InputConvention, image_size: int) -> None:
        if convention.size is not None and convention.size != image_size:
            logger.warning("{}: its weights were trained on {} px images, the data has {} px", what, convention.size,
                           image_size)


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


# --------------------------------------------------------------------------- resnets
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, norm: str = "batch") -> None:
        super().__init__()
        bias = norm == "none"
        cout = planes * self.expansion
        self.conv1 = _conv3x3(cin, planes, stride, bias=bias)
        self.bn1 = _bn2d(planes, norm)
        self.conv2 = _conv3x3(planes, planes, bias=bias)
        self.bn2 = _bn2d(planes, norm)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=bias), _bn2d(cout, norm))

    def last_bn(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's ResNet v1.5), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, norm: str = "batch") -> None:
        super().__init__()
        bias = norm == "none"
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=bias)
        self.bn1 = _bn2d(planes, norm)
        self.conv2 = _conv3x3(planes, planes, stride, bias=bias)
        self.bn2 = _bn2d(planes, norm)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=bias)
        self.bn3 = _bn2d(cout, norm)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=bias), _bn2d(cout, norm))

    def last_bn(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def torchvision_resnet_name(key: str) -> str:
    """torchvision's ResNet key -> ours (``stem``, ``layers.i.j``, ``shortcut``); ``fc.*`` ignored."""
    if key.startswith("fc."):
        return IGNORE
    for theirs, ours in (("conv1.", "stem.0."), ("bn1.", "stem.1.")):
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    m = re.fullmatch(r"layer(\d+)\.(\d+)\.(.+)", key)
    if m is None:
        return key
    rest = m.group(3).replace("downsample.", "shortcut.", 1)
    return f"layers.{int(m.group(1)) - 1}.{m.group(2)}.{rest}"


class ResNet(Pretrained, nn.Module):
    """ResNet trunk (BasicBlocks or Bottlenecks) with a stem chosen for the input size.

    ``stem="standard"``: 7x7/2 conv + 3x3/2 max pool (ImageNet; 112 px -> 28 px maps).
    ``stem="small"``: one 3x3/1 conv, no pooling (CIFAR style; keeps resolution for 32-64 px,
    at four times the compute of ``standard`` per pixel of the first stage).
    ``stem="auto"``: ``small`` up to 64 px, ``standard`` above, and always with ``weights``
    (torchvision's weights have the standard stem).
    ``load_weights=False`` builds the layout and input convention of ``weights`` without reading
    the file (rebuilding a saved model whose model.pt holds the weights).
    """

    block: type[BasicBlock] | type[Bottleneck] = BasicBlock
    arch = "resnet"

    def __init__(self, in_channels: int = 3, image_size: int = 64, width: int = 64,
                 stem: Literal["auto", "standard", "small"] = "auto", norm: Norm = "batch",
                 blocks: Sequence[int] = (2, 2, 2, 2), zero_init_residual: bool = False,
                 weights: str | None = None, strict: bool = True, load_weights: bool = True) -> None:
        super().__init__()
        _check_norm(norm)
        convention = IMAGENET if weights else CANONICAL
        in_channels = self._input_layer(convention, in_channels)
        if stem == "auto":
            stem = "standard" if weights or image_size > 64 else "small"
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
            planes = width * 2 ** i
            units = []
            for j in range(n):
                units.append(self.block(cin, planes, 2 if (i > 0 and j == 0) else 1, norm))
                cin = planes * self.block.expansion
            stages.append(nn.Sequential(*units))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = cin
        _init_weights(self)
        if zero_init_residual and norm == "batch":
            # Each residual branch starts as zero, so the block starts as identity (Goyal et al.).
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)) and isinstance(m.last_bn(), nn.BatchNorm2d):
                    nn.init.zeros_(m.last_bn().weight)
        if weights and load_weights:
            self._check_size(self.arch, convention, image_size)
            load_pretrained(self, weights, torchvision_resnet_name, strict=strict, what=self.arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.layers(self.stem(self.input_adapter(x)))), 1)


class ResNet18(ResNet):
    """ResNet-18: BasicBlocks ``[2, 2, 2, 2]``, ``out_features = 8 * width``."""

    arch = "resnet18"


class ResNet50(ResNet):
    """ResNet-50: Bottlenecks ``[3, 4, 6, 3]``, ``out_features = 32 * width``."""

    block = Bottleneck
    arch = "resnet50"

    def __init__(self, in_channels: int = 3, image_size: int = 64, width: int = 64,
                 stem: Literal["auto", "standard", "small"] = "auto", norm: Norm = "batch",
                 blocks: Sequence[int] = (3, 4, 6, 3), zero_init_residual: bool = False,
                 weights: str | None = None, strict: bool = True, load_weights: bool = True) -> None:
        super().__init__(in_channels, image_size, width, stem, norm, blocks, zero_init_residual, weights, strict,
                         load_weights)


# --------------------------------------------------------------------------- ir50
class IRBlock(nn.Module):
    """Improved residual unit plus a shortcut. ``unit="bn_prelu"``: BN-conv3x3-BN-PReLU-
    conv3x3(stride)-BN (ArcFace's unit, TFace's BasicBlockIR); ``unit="prelu"``: BN-conv3x3-PReLU-
    conv3x3(stride)-BN (face.evoLVe's and InsightFace_Pytorch's bottleneck_IR)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str = "batch", unit: str = "bn_prelu") -> None:
        super().__init__()
        bias = norm == "none"
        mid: list[nn.Module] = [_bn2d(cout, norm), nn.PReLU(cout)] if unit == "bn_prelu" else [nn.PReLU(cout)]
        self.residual = nn.Sequential(
            _bn2d(cin, norm), _conv3x3(cin, cout, bias=bias), *mid,
            _conv3x3(cout, cout, stride, bias=bias), _bn2d(cout, norm),
        )
        if cin == cout:
            # Subsampling identity: a 1x1 max pool with stride is a strided pick, as in ArcFace nets.
            self.shortcut: nn.Module = nn.MaxPool2d(1, stride) if stride > 1 else nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=bias), _bn2d(cout, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


def face_ir_name(key: str) -> str:
    """A public IR-50 checkpoint's key -> ours (``res_layer`` -> ``residual``, ``shortcut_layer``
    -> ``shortcut``; ``input_layer`` and ``output_layer`` keep their names)."""
    m = re.fullmatch(r"body\.(\d+)\.(res_layer|shortcut_layer)\.(.+)", key)
    if m is None:
        return key
    return f"body.{m.group(1)}.{'residual' if m.group(2) == 'res_layer' else 'shortcut'}.{m.group(3)}"


def _ir_unit_hint(state: dict[str, torch.Tensor]) -> str:
    # Six modules in a residual branch (a BN before the PReLU) or five tell the two layouts apart.
    unit = "bn_prelu" if "body.0.res_layer.5.weight" in state else "prelu"
    return f"this file's residual units look like unit: {unit}"


class IR50(Pretrained, nn.Module):
    """IR-50 (units ``[3, 4, 14, 3]``, channels ``w, 2w, 4w, 8w``), the ArcFace-style face trunk.

    Input layer conv3x3/1-BN-PReLU keeps full resolution; each stage halves it, so 112 px
    gives 7x7 maps. ``head="fc"``: BN-dropout-flatten-linear-BN to ``out_features`` (the
    usual face-embedding head; needs ``image_size`` divisible by 16). ``head="avg"``: global
    average pool then linear-BN, for any input size. ``weights``: a public IR-50 checkpoint
    (``unit`` must match its residual units; the error on a mismatch says which it has).
    """

    def __init__(self, in_channels: int = 3, image_size: int = 112, width: int = 64, out_features: int = 512,
                 head: Literal["fc", "avg"] = "fc", norm: Norm = "batch", dropout: float = 0.0,
                 blocks: Sequence[int] = (3, 4, 14, 3), unit: Literal["bn_prelu", "prelu"] = "bn_prelu",
                 weights: str | None = None, strict: bool = True, load_weights: bool = True) -> None:
        super().__init__()
        _check_norm(norm)
        if unit not in ("bn_prelu", "prelu"):
            raise ValueError(f"unit must be 'bn_prelu' or 'prelu', got {unit!r}")
        convention = FACE_RECOGNITION if weights else CANONICAL
        in_channels = self._input_layer(convention, in_channels)
        bias = norm == "none"
        self.input_layer = nn.Sequential(_conv3x3(in_channels, width, bias=bias), _bn2d(width, norm),
                                         nn.PReLU(width))
        units: list[nn.Module] = []
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            for j in range(n):
                units.append(IRBlock(cin, cout, 2 if j == 0 else 1, norm, unit))
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
        if weights and load_weights:
            self._check_size("ir50", convention, image_size)
            load_pretrained(self, weights, face_ir_name, strict=strict, what="ir50", hint=_ir_unit_hint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(self.input_adapter(x))))


@hookimpl
def facedapt_register_backbones(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register("convnet", ConvNet)
    registry.register("resnet18", ResNet18)
    registry.register("resnet50", ResNet50)
    registry.register("ir50", IR50)
