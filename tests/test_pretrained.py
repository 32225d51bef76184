"""Backbones from weights files: torchvision's ResNet key layout and the public IR-50 layout,
built here with the exact key names and shapes (nothing downloads); shape checks, strict
counts, one-line errors; the input convention travelling into training, model.pt and
load_model."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from facedapt_plugins.backbones import IMAGENET, IR50, ResNet18, ResNet50
from loguru import logger

import facedapt
from facedapt.cli import main
from facedapt.data.batches import CANONICAL, InputAdapter, input_convention
from facedapt.errors import CheckpointError

State = dict[str, torch.Tensor]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() points loguru at the captured stderr; give later tests a working sink again."""
    yield
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message))


def _bn(state: State, prefix: str, n: int, tracked: bool = True) -> None:
    state.update({f"{prefix}.weight": torch.rand(n) + 0.5, f"{prefix}.bias": torch.randn(n),
                  f"{prefix}.running_mean": torch.randn(n), f"{prefix}.running_var": torch.rand(n) + 0.5})
    if tracked:
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(7)


def torchvision_resnet(blocks: tuple[int, ...], bottleneck: bool, width: int = 64, tracked: bool = True) -> State:
    """The keys and shapes of torchvision's resnet18 / resnet50 state_dict()."""
    g = torch.Generator().manual_seed(0)
    state: State = {"conv1.weight": torch.randn(width, 3, 7, 7, generator=g)}
    _bn(state, "bn1", width, tracked)
    cin = width
    for i, n in enumerate(blocks):
        planes = width * 2 ** i
        for j in range(n):
            p = f"layer{i + 1}.{j}"
            stride = 2 if i > 0 and j == 0 else 1
            if bottleneck:
                cout = planes * 4
                shapes = {"conv1": (planes, cin, 1, 1), "conv2": (planes, planes, 3, 3), "conv3": (cout, planes, 1, 1)}
            else:
                cout = planes
                shapes = {"conv1": (planes, cin, 3, 3), "conv2": (planes, planes, 3, 3)}
            for k, (name, shape) in enumerate(shapes.items(), 1):
                state[f"{p}.{name}.weight"] = torch.randn(*shape, generator=g) * 0.05
                _bn(state, f"{p}.bn{k}", shape[0], tracked)
            if stride != 1 or cin != cout:
                state[f"{p}.downsample.0.weight"] = torch.randn(cout, cin, 1, 1, generator=g) * 0.05
                _bn(state, f"{p}.downsample.1", cout, tracked)
            cin = cout
    state["fc.weight"] = torch.randn(1000, cin, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


def public_ir50(unit: str = "prelu", width: int = 64, size: int = 112) -> State:
    """The keys and shapes of face.evoLVe's IR-50 (``unit="prelu"``) or TFace's (``bn_prelu``)."""
    g = torch.Generator().manual_seed(1)
    state: State = {"input_layer.0.weight": torch.randn(width, 3, 3, 3, generator=g) * 0.1}
    _bn(state, "input_layer.1", width)
    state["input_layer.2.weight"] = torch.full((width,), 0.25)
    cin, i = width, 0
    for stage, n in enumerate((3, 4, 14, 3)):
        depth = width * 2 ** stage
        for _ in range(n):
            p = f"body.{i}"
            _bn(state, f"{p}.res_layer.0", cin)
            state[f"{p}.res_layer.1.weight"] = torch.randn(depth, cin, 3, 3, generator=g) * 0.02
            k = 2
            if unit == "bn_prelu":
                _bn(state, f"{p}.res_layer.2", depth)
                k = 3
            state[f"{p}.res_layer.{k}.weight"] = torch.full((depth,), 0.25)
            state[f"{p}.res_layer.{k + 1}.weight"] = torch.randn(depth, depth, 3, 3, generator=g) * 0.02
            _bn(state, f"{p}.res_layer.{k + 2}", depth)
            if cin != depth:
                state[f"{p}.shortcut_layer.0.weight"] = torch.randn(depth, cin, 1, 1, generator=g) * 0.05
                _bn(state, f"{p}.shortcut_layer.1", depth)
            cin, i = depth, i + 1
    side = size // 16
    _bn(state, "output_layer.0", cin)
    state["output_layer.3.weight"] = torch.randn(512, cin * side * side, generator=g) * 0.01
    state["output_layer.3.bias"] = torch.zeros(512)
    _bn(state, "output_layer.4", 512)
    return state


def save(state: State, path: Path) -> Path:
    torch.save(state, path)
    return path


def log_lines() -> tuple[list[str], int]:
    lines: list[str] = []
    return lines, logger.add(lambda m: lines.append(str(m)), level="INFO", format="{message}")


def test_torchvision_layout_sizes() -> None:
    # torchvision's resnet18 and resnet50 state dicts hold 122 and 320 entries.
    assert len(torchvision_resnet((2, 2, 2, 2), False)) == 122
    assert len(torchvision_resnet((3, 4, 6, 3), True)) == 320


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_resnet_from_torchvision_file(arch: str, tmp_path: Path) -> None:
    bottleneck = arch == "resnet50"
    state = torchvision_resnet((3, 4, 6, 3) if bottleneck else (2, 2, 2, 2), bottleneck)
    path = save(state, tmp_path / f"{arch}.pth")
    lines, sink = log_lines()
    try:
        model = (ResNet50 if bottleneck else ResNet18)(3, 64, weights=str(path))
    finally:
        logger.remove(sink)
    n = len(state) - 2
    assert lines == [f"{arch} weights from {path}: {n} loaded, 0 missing, 0 unexpected, 2 ignored\n"]
    assert model.stem_kind == "standard"  # the weights' stem, even at 64 px
    own = model.state_dict()
    torch.testing.assert_close(own["stem.0.weight"], state["conv1.weight"])
    torch.testing.assert_close(own["layers.1.0.shortcut.0.weight"], state["layer2.0.downsample.0.weight"])
    torch.testing.assert_close(own["layers.3.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
    assert model.out_features == (2048 if bottleneck else 512)
    assert model.input_convention == IMAGENET


def test_old_torchvision_files_have_no_batch_counts(tmp_path: Path) -> None:
    path = save(torchvision_resnet((2, 2, 2, 2), False, tracked=False), tmp_path / "old.pth")
    lines, sink = log_lines()
    try:
        ResNet18(3, 112, weights=str(path))
    finally:
        logger.remove(sink)
    assert "0 missing, 0 unexpected" in lines[0]


def test_imagenet_adapter_applies_the_weights_convention() -> None:
    """Canonical input (the engine's [-1, 1]) becomes ImageNet's (pixel / 255 - mean) / std;
    a gray image is repeated on three channels."""
    pixels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    canonical = pixels.float() / 127.5 - 1
    mean = torch.tensor(IMAGENET.mean).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET.std).view(1, 3, 1, 1)
    torch.testing.assert_close(InputAdapter(IMAGENET)(canonical), (pixels.float() / 255 - mean) / std)
    gray = canonical[:, :1]
    torch.testing.assert_close(InputAdapter(IMAGENET)(gray), InputAdapter(IMAGENET)(gray.expand(-1, 3, -1, -1)))
    assert ResNet18(1, 112, weights=None).input_convention == CANONICAL  # from scratch: no adapter


@pytest.mark.parametrize("unit", ["prelu", "bn_prelu"])
def test_ir50_public_layout(unit: str, tmp_path: Path) -> None:
    state = public_ir50(unit)
    path = save(state, tmp_path / "ir50.pth")
    model = IR50(3, 112, unit=unit, weights=str(path))  # type: ignore[arg-type]
    own = model.state_dict()
    torch.testing.assert_close(own["body.3.shortcut.0.weight"], state["body.3.shortcut_layer.0.weight"])
    torch.testing.assert_close(own["output_layer.3.weight"], state["output_layer.3.weight"])
    model.eval()
    assert model(torch.randn(1, 3, 112, 112)).shape == (1, 512)
    other = "bn_prelu" if unit == "prelu" else "prelu"
    with pytest.raises(CheckpointError) as err:
        IR50(3, 112, unit=other, weights=str(path))  # type: ignore[arg-type]
    message = str(err.value)
    assert str(path) in message and "key 'body.0." in message and f"unit: {unit}" in message
    assert "\n" not in message


def test_wrong_file_names_the_first_bad_key(tmp_path: Path) -> None:
    path = save(torchvision_resnet((2, 2, 2, 2), False), tmp_path / "resnet18.pth")
    with pytest.raises(CheckpointError, match=r"resnet18\.pth: key 'layer1\.0\.conv1\.weight' has shape \[64, 64, 3, 3\] "
                                              r"but resnet50 expects \[64, 64, 1, 1\]"):
        ResNet50(3, 112, weights=str(path))


@pytest.mark.parametrize("damage", ["truncated", "text", "missing", "not tensors"])
def test_unreadable_files(damage: str, tmp_path: Path) -> None:
    path = save(torchvision_resnet((2, 2, 2, 2), False), tmp_path / "w.pth")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "text":
        path.write_text("not weights", encoding="utf-8")
    elif damage == "missing":
        path.unlink()
    else:
        torch.save({"conv1.weight": torch.zeros(1), "epoch": 3}, path)
    with pytest.raises(CheckpointError) as err:
        ResNet18(3, 112, weights=str(path))
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    if damage == "not tensors":
        assert "'epoch'" in message


def test_strict_and_partial(tmp_path: Path) -> None:
    state = torchvision_resnet((2, 2, 2, 2), False)
    del state["layer3.1.conv2.weight"]
    state["extra.weight"] = torch.zeros(3)
    path = save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="key 'extra.weight' has no place in resnet18 .1 missing, 1 unexpected"):
        ResNet18(3, 112, weights=str(path))
    lines, sink = log_lines()
    try:
        ResNet18(3, 112, weights=str(path), strict=False)
    finally:
        logger.remove(sink)
    assert "119 loaded, 1 missing, 1 unexpected, 2 ignored" in lines[0]


def test_convention_travels_with_the_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Train from a weights file, then load the model where the file is gone: model.pt holds
    the convention, the predictions use it, and the output names what the model learned from."""
    path = save(torchvision_resnet((2, 2, 2, 2), False, width=8), tmp_path / "resnet18.pth")
    run_dir = tmp_path / "run"
    argv = ["-q", "run", "pada", "--run-dir", str(run_dir), "data.dataset={name: synthetic, preset: tiny}",
            "data.augment=[]", f"model.backbone={{name: resnet18, width: 8, weights: {path}}}", "train.source_steps=2",
            "train.steps=1", "train.batch_size=8", "data.target_subjects={first: 1}", "eval.leakage_probe=false",
            "train.precision=fp32", "train.eval_every=0", "train.checkpoint_every=0", "eval.report=false"]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    path.unlink()
    model = facedapt.load_model(run_dir)
    backbone = model.method.models["backbone"]
    assert input_convention(backbone) == IMAGENET
    assert model.conventions["backbone"].name == "imagenet"
    assert model.trained_on == ["ImageNet (torchvision weights)", "synthetic"] and model.synthetic_only
    state = torch.load(run_dir / "source" / "model.pt", weights_only=True)["models"]["backbone"]
    torch.testing.assert_close(state["input_adapter.mean"].flatten(), torch.tensor(IMAGENET.mean))
    pred = model.predict(torch.full((1, 3, 64, 64), 128, dtype=torch.uint8))
    assert set(pred[0]["probabilities"]) == set(model.classes)


def test_missing_weights_file_fails_the_run_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nowhere" / "resnet18.pth"
    override = f"model.backbone.weights={missing}"
    assert main(["-q", "validate", "kdef", override]) == 0  # validate reads no file
    capsys.readouterr()
    argv = ["-q", "run", "pada", "--run-dir", str(tmp_path / "run"), "data.dataset={name: synthetic, preset: tiny}",
            f"model.backbone={{name: resnet18, width: 8, weights: {missing}}}", "train.source_steps=1",
            "eval.report=false"]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("facedapt: error:") and f"{missing}: no such weights file" in line
