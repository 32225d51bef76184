"""Heads, discriminators, decoders and the registration hooks of the network plugins."""

from __future__ import annotations

import inspect

import pytest
import torch
from facedapt_plugins import backbones, decoders, discriminators, heads, losses
from facedapt_plugins.decoders import ConvDecoder
from facedapt_plugins.discriminators import (
    ConditionalDiscriminator,
    MLPDiscriminator,
    multilinear_map,
)
from facedapt_plugins.heads import LinearClassifier, MLPEncoder

from facedapt.registry import Registry, bind_kwargs


def test_mlp_encoder_and_linear_classifier() -> None:
    enc = MLPEncoder(in_features=32, out_features=16, hidden=24, dropout=0.1)
    assert enc.out_features == 16
    f = enc(torch.randn(5, 32))
    assert f.shape == (5, 16) and bool((f >= 0).all())  # output BN-ReLU bottleneck
    raw = MLPEncoder(32, 16, hidden=[], norm="none", output_activation=False)
    assert len(raw.net) == 1 and bool((raw(torch.randn(50, 32)) < 0).any())
    deep = MLPEncoder(32, 8, hidden=(20, 12))
    assert [m.out_features for m in deep.net if isinstance(m, torch.nn.Linear)] == [20, 12, 8]
    clf = LinearClassifier(in_features=16, num_classes=7, dropout=0.2)
    assert clf(f).shape == (5, 7) and clf.num_classes == 7


def test_mlp_discriminator() -> None:
    d = MLPDiscriminator(in_features=16, hidden=32, depth=2)
    assert d(torch.randn(6, 16)).shape == (6,)
    d0 = MLPDiscriminator(16, depth=0)
    assert d0(torch.randn(3, 16)).shape == (3,)
    sn = MLPDiscriminator(16, hidden=32, spectral_norm=True, norm="none")
    out = sn(torch.randn(4, 16))
    out.sum().backward()
    assert any("parametrizations" in k for k in sn.state_dict())


def test_conditional_discriminator_multilinear() -> None:
    d = ConditionalDiscriminator(in_features=8, num_classes=3, hidden=16)
    assert not d.randomized and d.map_dim == 24
    f, logits = torch.randn(5, 8), torch.randn(5, 3, requires_grad=True)
    h = d.conditioning(f, logits)
    p = torch.softmax(logits, 1)
    torch.testing.assert_close(h.view(5, 3, 8), p.unsqueeze(2) * f.unsqueeze(1))
    torch.testing.assert_close(multilinear_map(f, p), h)
    out = d(f, logits)
    assert out.shape == (5,)
    out.sum().backward()
    assert logits.grad is None  # predictions condition D; they are detached
    attached = ConditionalDiscriminator(8, 3, hidden=16, detach_predictions=False)
    attached(f, logits).sum().backward()
    assert logits.grad is not None


def test_conditional_discriminator_randomized() -> None:
    torch.manual_seed(1)
    auto = ConditionalDiscriminator(in_features=1024, num_classes=7, hidden=16, randomized_dim=64)
    assert auto.randomized and auto.map_dim == 64  # 1024 * 7 > 4096
    f, logits = torch.randn(4, 1024), torch.randn(4, 7)
    h = auto.conditioning(f, logits)
    expected = (f @ auto.rf) * (torch.softmax(logits, 1) @ auto.rg) / 8.0
    torch.testing.assert_close(h, expected)
    assert auto(f, logits).shape == (4,)
    assert {"rf", "rg"} <= set(auto.state_dict())
    torch.manual_seed(2)
    again = ConditionalDiscriminator(1024, 7, hidden=16, randomized_dim=64)
    assert torch.equal(again.rf, auto.rf)  # the map depends on its seed only, not the global RNG
    assert not torch.equal(ConditionalDiscriminator(1024, 7, hidden=16, randomized_dim=64, seed=3).rf, auto.rf)
    forced = ConditionalDiscriminator(8, 3, hidden=16, randomized=True, randomized_dim=10)
    assert forced.randomized and forced(torch.randn(3, 8), torch.randn(3, 3)).shape == (3,)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(auto(f, logits).float()).all()


@pytest.mark.parametrize("size", [64, 112])
def test_conv_decoder_shape_and_range(size: int) -> None:
    dec = ConvDecoder(in_features=40, out_channels=3, image_size=size, width=8)
    out = dec(torch.randn(2, 40) * 10)
    assert out.shape == (2, 3, size, size)
    assert float(out.detach().min()) >= -1.0 and float(out.detach().max()) <= 1.0
    out.mean().backward()
    lin = ConvDecoder(40, 1, 64, width=8, output="linear", norm="none")
    assert lin(torch.randn(2, 40)).shape == (2, 1, 64, 64)


EXPECTED = {
    "backbones": (backbones.facedapt_register_backbones, {"convnet", "resnet18", "resnet50", "ir50"},
                  ("in_channels", "image_size")),
    "heads": (heads.facedapt_register_heads, {"mlp", "linear", "mlp_classifier"}, ("in_features", "num_classes")),
    "discriminators": (discriminators.facedapt_register_discriminators, {"mlp", "conditional"},
                       ("in_features", "num_classes")),
    "decoders": (decoders.facedapt_register_decoders, {"conv"}, ("in_features", "out_channels", "image_size")),
    "losses": (losses.facedapt_register_losses,
               {"cross_entropy", "domain_adversarial", "confusion", "entropy", "l1", "ssim", "l1_ssim"}, ()),
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_registration_hooks(family: str) -> None:
    hook, names, provided = EXPECTED[family]
    registry = Registry(family)
    hook(registry)
    assert set(registry.names()) == names
    for entry in registry:
        # The engine-supplied arguments are enough to bind every factory (recipe args optional).
        params = inspect.signature(entry.factory).parameters
        bind_kwargs(entry.factory, {}, key=f"model.{entry.name}",
                    provided=tuple(p for p in provided if p in params))
    assert hook.__name__ == f"facedapt_register_{family}"
