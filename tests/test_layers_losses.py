"""Gradient reversal, domain batch norm, AdaBN and the loss plugins."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from facedapt_plugins.layers import (
    DomainBatchNorm1d,
    DomainBatchNorm2d,
    GradientReversalLayer,
    convert_to_domain_bn,
    domain,
    grad_reverse,
    recompute_bn_stats,
    warmup_lambda,
)
from facedapt_plugins.losses import (
    L1,
    L1SSIM,
    SSIM,
    Confusion,
    CrossEntropy,
    DomainAdversarial,
    Entropy,
)
from torch import nn


# --------------------------------------------------------------------------- gradient reversal
def _grads(x: torch.Tensor, w: torch.Tensor, v: torch.Tensor, reverse) -> tuple[torch.Tensor, torch.Tensor]:
    h = torch.tanh(x @ w)
    loss = ((reverse(h) @ v) ** 2).sum()
    return torch.autograd.grad(loss, (x, v))


@pytest.mark.parametrize("coeff", [1.0, 0.37, 2.5])
def test_grad_reverse_scales_and_flips_gradient(coeff: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, generator=g, dtype=torch.float64)
    v = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    gx, gv = _grads(x, w, v, lambda h: h)
    rx, rv = _grads(x, w, v, lambda h: grad_reverse(h, coeff))
    torch.testing.assert_close(rx, -coeff * gx)
    torch.testing.assert_close(rv, gv)  # parameters after the layer are unaffected
    # Forward pass is the identity.
    assert torch.equal(grad_reverse(x, coeff), x)


def test_grad_reverse_layer_uses_scheduled_lambda() -> None:
    layer = GradientReversalLayer(max_lambda=1.0, gamma=10.0, max_steps=100, auto_step=False)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, generator=g, dtype=torch.float64)
    v = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    gx, _ = _grads(x, w, v, lambda h: h)
    for step in (0, 10, 50, 100):
        layer.set_step(step)
        lam = warmup_lambda(step / 100)
        rx, _ = _grads(x, w, v, layer)
        torch.testing.assert_close(rx, -lam * gx, rtol=1e-6, atol=1e-9)


def test_warmup_schedule_follows_formula() -> None:
    max_lambda, gamma, max_steps = 0.8, 10.0, 200
    layer = GradientReversalLayer(max_lambda=max_lambda, gamma=gamma, max_steps=max_steps)
    for step in (0, 1, 20, 100, 150, 200, 500):
        layer.set_step(step)
        p = min(step / max_steps, 1.0)
        expected = max_lambda * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)
        assert layer.progress == pytest.approx(p)
        assert layer.coeff == pytest.approx(expected, rel=1e-6, abs=1e-7)
        assert float(layer._coeff_tensor()) == pytest.approx(expected, rel=1e-6, abs=1e-7)
    layer.set_step(0)
    assert layer.coeff == 0.0


def test_fixed_lambda_mode() -> None:
    layer = GradientReversalLayer(max_lambda=0.3, schedule="fixed")
    x = torch.ones(3, requires_grad=True)
    (gx,) = torch.autograd.grad(layer(x).sum(), x)
    torch.testing.assert_close(gx, torch.full((3,), -0.3))
    assert layer.coeff == 0.3


def test_auto_step_counts_training_forwards_only() -> None:
    layer = GradientReversalLayer(max_steps=10)
    x = torch.zeros(2, 3)
    layer(x)
    layer(x)
    assert int(layer.num_steps) == 2
    layer.eval()
    layer(x)
    assert int(layer.num_steps) == 2
    manual = GradientReversalLayer(max_steps=10, auto_step=False)
    manual(x)
    manual.advance()
    assert int(manual.num_steps) == 1


def test_step_counter_is_saved_and_restored() -> None:
    layer = GradientReversalLayer(max_steps=50)
    for _ in range(7):
        layer(torch.zeros(1))
    state = layer.state_dict()
    assert "num_steps" in state and int(state["num_steps"]) == 7
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restored = GradientReversalLayer(max_steps=50)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert int(restored.num_steps) == 7
    assert restored.coeff == pytest.approx(layer.coeff)


def test_grl_rejects_bad_options() -> None:
    with pytest.raises(ValueError):
        GradientReversalLayer(schedule="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        GradientReversalLayer(max_steps=0)


# --------------------------------------------------------------------------- domain batch norm
def _small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 5), nn.BatchNorm1d(5))


def test_convert_to_domain_bn_copies_state() -> None:
    torch.manual_seed(0)
    model = _small_model()
    model.train()
    model(torch.randn(8, 3, 8, 8) * 3 + 1)  # move running stats away from the defaults
    model.eval()
    x = torch.randn(4, 3, 8, 8)
    before = model(x)
    bn_mean = model[1].running_mean.clone()
    convert_to_domain_bn(model)
    assert isinstance(model[1], DomainBatchNorm2d) and isinstance(model[6], DomainBatchNorm1d)
    for d in ("source", "target"):
        torch.testing.assert_close(model[1].stats(d)[0], bn_mean)
        with domain(model, d):
            torch.testing.assert_close(model(x), before)
    keys = model.state_dict().keys()
    assert {"1.running_mean_source", "1.running_mean_target", "1.weight", "1.bias"} <= set(keys)


def test_domain_bn_target_forward_changes_only_target_stats() -> None:
    torch.manual_seed(0)
    bn = DomainBatchNorm2d(3)
    bn.train()
    with domain(bn, "source"):
        bn(torch.randn(6, 3, 4, 4))
    src = [t.clone() for t in bn.stats("source")]
    tgt = [t.clone() for t in bn.stats("target")]
    with domain(bn, "target"):
        assert bn.active == "target"
        bn(torch.randn(6, 3, 4, 4) * 2 + 5)
    assert bn.active == "source"  # restored
    for a, b in zip(src, bn.stats("source")):
        assert torch.equal(a, b)
    assert not torch.equal(tgt[0], bn.stats("target")[0])
    assert int(bn.stats("target")[2]) == 1
    # Eval mode normalizes with the active domain's statistics.
    bn.eval()
    x = torch.randn(2, 3, 4, 4) + 5
    with domain(bn, "target"):
        y_t = bn(x)
    y_s = bn(x)
    assert not torch.allclose(y_t, y_s)
    mean, var, _ = bn.stats("target")
    expected = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + bn.eps)
    torch.testing.assert_close(y_t, expected)


def test_domain_bn_separate_affine_and_errors() -> None:
    bn = DomainBatchNorm1d(4, share_affine=False)
    names = {n for n, _ in bn.named_parameters()}
    assert names == {"weight_source", "bias_source", "weight_target", "bias_target"}
    with pytest.raises(ValueError):
        bn.set_domain("other")
    with pytest.raises(ValueError):
        bn(torch.randn(2, 4, 3, 3))
    model = convert_to_domain_bn(nn.Sequential(nn.BatchNorm1d(4)), share_affine=False)
    model[0].weight_target.data.fill_(2.0)
    model.eval()
    x = torch.randn(3, 4)
    with domain(model, "target"):
        torch.testing.assert_close(model(x), 2 * x / math.sqrt(1 + 1e-5))


def test_domain_context_is_noop_without_domain_bn() -> None:
    model = nn.Linear(2, 2)
    with domain(model, "target") as m:
        assert m is model


# --------------------------------------------------------------------------- AdaBN
def test_recompute_bn_stats_gives_batch_statistics() -> None:
    torch.manual_seed(0)
    model = _small_model()
    model.train()
    model(torch.randn(8, 3, 8, 8))
    model.eval()
    model[3].train()  # a mixed mode that must be restored as it was
    batch = torch.randn(16, 3, 8, 8) * 2 + 3
    n = recompute_bn_stats(model, [batch])
    assert n == 1
    with torch.no_grad():
        z = model[0](batch)
    torch.testing.assert_close(model[1].running_mean, z.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(model[1].running_var, z.var(dim=(0, 2, 3), unbiased=True))
    # Dropout stayed off: the 1d statistics are those of the deterministic path.
    with torch.no_grad():
        h = model[5](torch.flatten(torch.relu(F.batch_norm(z, None, None, model[1].weight, model[1].bias, True)), 1))
    torch.testing.assert_close(model[6].running_mean, h.mean(0), rtol=1e-4, atol=1e-5)
    assert model[1].momentum == 0.1 and not model.training and model[3].training and not model[1].training


def test_recompute_bn_stats_cumulative_over_batches() -> None:
    bn = nn.BatchNorm1d(3)
    a, b = torch.randn(10, 3), torch.randn(10, 3) + 4
    recompute_bn_stats(bn, [a, b])
    torch.testing.assert_close(bn.running_mean, (a.mean(0) + b.mean(0)) / 2)
    assert int(bn.num_batches_tracked) == 2


def test_recompute_bn_stats_domain_and_forward() -> None:
    model = convert_to_domain_bn(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    src = [t.clone() for t in model[1].stats("source")]
    batch = torch.randn(12, 3) + 2
    calls = []
    recompute_bn_stats(model, [batch], domain="target", forward=lambda x: calls.append(1) or model(x))
    assert calls == [1]
    assert model[1].active == "source"
    with torch.no_grad():
        z = model[0](batch)
    torch.testing.assert_close(model[1].stats("target")[0], z.mean(0))
    for a, b in zip(src, model[1].stats("source")):
        assert torch.equal(a, b)


def test_recompute_bn_stats_without_batches_keeps_stats() -> None:
    bn = nn.BatchNorm1d(2)
    bn.running_mean.fill_(3.0)
    with pytest.raises(ValueError):
        recompute_bn_stats(bn, [])
    assert torch.equal(bn.running_mean, torch.full((2,), 3.0))


# --------------------------------------------------------------------------- losses
def test_confusion_minimal_exactly_at_uniform() -> None:
    loss = Confusion()
    k = 7
    for const in (0.0, 3.5):
        logits = torch.full((4, k), const, dtype=torch.float64, requires_grad=True)
        value = loss(logits)
        (grad,) = torch.autograd.grad(value, logits)
        assert float(value.detach()) == pytest.approx(math.log(k))
        assert torch.allclose(grad, torch.zeros_like(grad), atol=1e-12)
    g = torch.Generator().manual_seed(0)
    for scale in (1e-3, 0.1, 1.0, 10.0):
        logits = torch.randn(64, k, generator=g, dtype=torch.float64) * scale
        per_sample = -F.log_softmax(logits, 1).mean(1)
        assert bool((per_sample > math.log(k)).all())
        assert float(loss(logits)) > math.log(k)


def test_domain_adversarial_perfect_and_confused() -> None:
    loss = DomainAdversarial()
    s, t = torch.full((5,), 30.0), torch.full((7,), -30.0)
    assert float(loss(s, t)) == pytest.approx(0.0, abs=1e-10)
    assert float(loss(s, t, mode="flipped")) == pytest.approx(30.0, rel=1e-6)
    zeros_s, zeros_t = torch.zeros(5, 1), torch.zeros(7)
    assert float(loss(zeros_s, zeros_t)) == pytest.approx(math.log(2))
    assert float(loss(zeros_s, zeros_t, mode="confused")) == pytest.approx(math.log(2))
    # Uniform weights change nothing; the two domains count equally.
    ls, lt = torch.randn(5), torch.randn(7)
    assert float(loss(ls, lt, torch.full((5,), 3.0), torch.ones(7))) == pytest.approx(float(loss(ls, lt)))
    expected = 0.5 * (F.binary_cross_entropy_with_logits(ls, torch.ones(5))
                      + F.binary_cross_entropy_with_logits(lt, torch.zeros(7)))
    assert float(loss(ls, lt)) == pytest.approx(float(expected))
    with pytest.raises(ValueError):
        loss(ls, lt, mode="bogus")  # type: ignore[arg-type]


def test_cross_entropy_ignore_and_smoothing() -> None:
    logits = torch.randn(6, 4, requires_grad=True)
    target = torch.tensor([0, 1, -1, 3, 2, -1])
    for ls in (0.0, 0.2):
        expected = F.cross_entropy(logits, target, ignore_index=-1, label_smoothing=ls)
        torch.testing.assert_close(CrossEntropy(label_smoothing=ls)(logits, target), expected)
    none = CrossEntropy()(logits, torch.full((6,), -1))
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_entropy() -> None:
    k = 5
    assert float(Entropy()(torch.zeros(3, k))) == pytest.approx(math.log(k))
    assert float(Entropy(normalize=True)(torch.zeros(3, k))) == pytest.approx(1.0)
    peaked = torch.tensor([[50.0, 0, 0, 0, 0]])
    assert float(Entropy()(peaked)) == pytest.approx(0.0, abs=1e-12)
    assert Entropy(reduction="none")(torch.randn(4, k)).shape == (4,)


def test_reconstruction_losses() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
    for loss in (L1(), SSIM(), L1SSIM()):
        assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-4)
        assert float(loss(y, x)) > 0.01
    assert float(L1()(y, x)) == pytest.approx(float((y - x).abs().mean()))
    combo = L1SSIM(l1_weight=0.4, ssim_weight=2.0)
    assert float(combo(y, x)) == pytest.approx(0.4 * float(L1()(y, x)) + 2.0 * float(SSIM()(y, x)), rel=1e-5)
    y.requires_grad_(True)
    SSIM()(y, x).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(L1SSIM()(y.bfloat16(), x.bfloat16()))


def test_domain_bn_in_backbone_with_bf16_channels_last() -> None:
    from facedapt_plugins.backbones import ResNet18

    torch.manual_seed(0)
    model = convert_to_domain_bn(ResNet18(3, 32, width=8)).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16), domain(model, "target"):
        y = model(x)
    y.float().sum().backward()
    stem_bn = model.stem[1]
    assert int(stem_bn.stats("target")[2]) == 1 and int(stem_bn.stats("source")[2]) == 0


def test_grad_reverse_bf16_gradient_dtype() -> None:
    layer = GradientReversalLayer(max_steps=10)
    layer.set_step(10)
    x = torch.randn(3, 4, dtype=torch.bfloat16, requires_grad=True)
    (g,) = torch.autograd.grad(layer(x).float().sum(), x)
    assert g.dtype == torch.bfloat16
    torch.testing.assert_close(g.float(), torch.full((3, 4), -warmup_lambda(1.0)), rtol=1e-2, atol=1e-2)
