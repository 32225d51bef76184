"""Backbone plugins: shapes on their intended input sizes, backward, channels_last + bf16."""

from __future__ import annotations

import pytest
import torch
from facedapt_plugins.backbones import IR50, ConvNet, ResNet18


def _check(model: torch.nn.Module, size: int, batch: int = 2) -> None:
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size)
    model.train()
    y = model(x)
    assert y.shape == (batch, model.out_features)
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    # channels_last + bf16 autocast on CPU (the mixed-precision path of the engine).
    model = model.to(memory_format=torch.channels_last).eval()
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == (batch, model.out_features)
    assert torch.isfinite(out.float()).all()
    # bf16 keeps roughly 3 significant digits; compare loosely against float32.
    rel = (out.float() - ref).norm() / ref.norm().clamp_min(1e-6)
    assert float(rel) < 0.1


def test_convnet_64() -> None:
    model = ConvNet(in_channels=3, image_size=64, width=16)
    assert model.out_features == 128
    _check(model, 64, batch=4)


def test_convnet_without_norm() -> None:
    model = ConvNet(3, 64, width=8, norm="none")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 64)


def test_resnet18_64_small_stem() -> None:
    model = ResNet18(in_channels=3, image_size=64, width=16)
    assert model.stem_kind == "small" and model.out_features == 128
    _check(model, 64)


def test_resnet18_standard_stem_and_full_width() -> None:
    model = ResNet18(3, 64, stem="standard", zero_init_residual=True)
    assert model.out_features == 512
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 512)
    assert ResNet18(3, 112).stem_kind == "standard"
    with pytest.raises(ValueError):
        ResNet18(3, 64, stem="huge")  # type: ignore[arg-type]


def test_ir50_112() -> None:
    model = IR50(in_channels=3, image_size=112)
    assert model.out_features == 512
    units = [m for m in model.modules() if m.__class__.__name__ == "IRBlock"]
    assert len(units) == 3 + 4 + 14 + 3
    # Full width forward + backward once; the mixed-precision path on a narrow copy (speed).
    x = torch.randn(2, 3, 112, 112)
    y = model(x)
    assert y.shape == (2, 512)
    y.sum().backward()
    assert model.input_layer[0].weight.grad is not None
    _check(IR50(3, 112, width=16, out_features=128), 112)


def test_ir50_avg_head_other_sizes() -> None:
    model = IR50(3, 64, width=8, out_features=32, head="avg")
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 32)
    with pytest.raises(ValueError):
        IR50(3, 100, width=8)  # fc head needs size divisible by 16


def test_grayscale_input() -> None:
    assert ConvNet(in_channels=1, image_size=64, width=8)(torch.randn(2, 1, 64, 64)).shape == (2, 64)
