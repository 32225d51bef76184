"""The cross classifiers learn (their own learning rate, inner steps, MLP option), and the
disentanglement measures reach results.json: the fresh probe logged during training and the
cross classifiers' cross-entropy on held-out source people."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest
import torch
import toy_plugin
from conftest import run_toy, toy_recipe
from facedapt_plugins.methods.terms import CrossTerm, between_class_share
from torch.nn import functional as F

from facedapt.data.batches import gather
from facedapt.data.samples import Samples
from facedapt.engine.context import StepContext
from facedapt.engine.run import build_method
from facedapt.engine.trainer import PhaseRunner
from facedapt.method import Batch, Method
from facedapt.plugin_manager import Plugins, load_plugins

CROSS = ("cross_pose_classifier", "cross_expression_classifier")


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    return load_plugins(extra=[toy_plugin])


@pytest.fixture(scope="module")
def samples() -> Samples:
    return toy_plugin.ToyFaces().load()


def _method(plugins: Plugins, samples: Samples, *overrides: str) -> tuple[Method, StepContext]:
    recipe = toy_recipe(*overrides).recipe
    torch.manual_seed(0)
    method = build_method(plugins, recipe, len(samples.subject_ids), samples.image_shape,
                          int(samples.expression.max()) + 1)
    optimizers, params, _ = PhaseRunner(recipe, plugins, method, torch.device("cpu"), "fp32", None, [])._optimizers("adapt")
    return method, StepContext(optimizers, params, contextlib.nullcontext, None, None, "abort", 100, "adapt")


def _classes(method: Method) -> tuple[int, int]:
    return method.models["cross_pose_classifier"].out_features, method.models["cross_expression_classifier"].out_features


def _chance(method: Method) -> float:
    """The two cross classifiers' summed cross-entropy at chance."""
    return sum(math.log(k) for k in _classes(method))


def _cross(method: Method) -> CrossTerm:
    term = method.term(CrossTerm)
    assert isinstance(term, CrossTerm)
    return term


def _learn(method: Method, ctx: StepContext, steps: int, n: int = 64) -> list[float]:
    """Features that carry the other label plainly (f_e holds the pose bin, f_p the
    expression); the cross-entropy of each round of cross-classifier steps."""
    g = torch.Generator().manual_seed(0)
    poses, expressions = _classes(method)
    pose, expression = torch.randint(0, poses, (n,), generator=g), torch.randint(0, expressions, (n,), generator=g)
    fe = F.one_hot(pose, method.feature_dim).float() + 0.1 * torch.randn(n, method.feature_dim, generator=g)
    fp = F.one_hot(expression, method.pose_feature_dim).float() + 0.1 * torch.randn(n, method.pose_feature_dim, generator=g)
    src = Batch(images=torch.zeros(n, 1, 8, 8), expression=expression, pose_bin=pose)
    return [float(_cross(method).train_classifiers(method, {"expression": fe, "pose": fp}, src, ctx)) for _ in range(steps)]


def test_cross_classifiers_learn_a_separable_problem(plugins: Plugins, samples: Samples) -> None:
    method, ctx = _method(plugins, samples, "method.cross_lr=0.01", "method.cross_inner_steps=5")
    ce = _learn(method, ctx, 20)
    assert abs(ce[0] - _chance(method)) < 1.0
    assert ce[-1] < 0.25 * _chance(method)
    assert {g["lr"] for g in ctx.optimizers["cross"].param_groups} == {0.01}


def test_cross_classifiers_at_the_adaptation_rate_with_one_step_stay_near_chance(plugins: Plugins,
                                                                                 samples: Samples) -> None:
    """The configuration before cross_lr and inner steps: the same problem is barely learnt."""
    method, ctx = _method(plugins, samples, "method.cross_lr=null", "method.cross_inner_steps=1")
    ce = _learn(method, ctx, 20)
    assert ce[-1] > 0.8 * _chance(method)


@pytest.mark.parametrize("hidden", [0, 32])
def test_inner_steps_update_exactly_the_cross_classifiers(hidden: int, plugins: Plugins, samples: Samples) -> None:
    method, ctx = _method(plugins, samples, f"method.cross_hidden={hidden}", "method.cross_inner_steps=3")
    assert type(method.models["cross_pose_classifier"]).__name__ == ("MLPClassifier" if hidden else "LinearClassifier")
    cross = {id(p) for n in CROSS for p in method.models[n].parameters()}
    assert {id(p) for g in ctx.optimizers["cross"].param_groups for p in g["params"]} == cross
    calls: list[str] = []
    update = ctx.update
    ctx.update = lambda loss, group="main", terms=None, retain_graph=False: (  # type: ignore[method-assign]
        calls.append(group) or update(loss, group, terms, retain_graph))
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in method.models.items()}
    g = torch.Generator().manual_seed(1)
    idx = torch.nonzero(samples.subject != 0).squeeze(1)[torch.randperm(int((samples.subject != 0).sum()), generator=g)[:8]]
    src = gather(samples, idx, torch.device("cpu"))
    method.train(True)
    _cross(method).train_classifiers(method, method.encode(src.images, "source"), src, ctx)
    assert calls == ["cross"] * 3
    for n, m in method.models.items():
        changed = any(not torch.equal(a, b) for a, b in zip(before[n], m.parameters()))
        assert changed == (n in CROSS), n


def test_results_record_the_training_probe_and_the_cross_classifiers(plugins: Plugins, tmp_path: Path) -> None:
    results = run_toy(plugins, tmp_path / "run", "method.probe_every=2", "data.source_val=0.3")
    assert set(results["cross_classifier_ce"]) == {"pose_from_expression", "expression_from_pose"}
    assert all(0 < v < 10 for v in results["cross_classifier_ce"].values())
    phases = [(r["phase"], r["target"], r["step"]) for r in results["training_probe"]]
    targets = list(results["per_subject"])
    assert phases == [("source", None, 2), ("source", None, 4), ("source", None, 6),
                      *[("adapt", t, s) for t in targets for s in (2, 4)]]
    assert all(0 <= r["pose_from_expression"] <= 1 for r in results["training_probe"])
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["training_probe"] == results["training_probe"]
    logged = [json.loads(line) for line in (tmp_path / "run" / "source" / "metrics.jsonl").read_text().splitlines()]
    assert "probe_pose_from_expression" in logged[-1]


def test_between_class_share_is_zero_for_equal_class_means_and_near_one_for_the_label_itself() -> None:

    y = torch.arange(4).repeat(8)
    same = torch.randn(8, 6).repeat_interleave(4, 0)  # every class sees the same 8 rows
    assert float(between_class_share(same, y, 4)) < 1e-5
    plain = F.one_hot(y, 4).float() + 0.01 * torch.randn(32, 4)
    assert float(between_class_share(plain, y, 4)) > 0.95
    # rescaling a feature changes nothing: the share is read on standardized features
    torch.testing.assert_close(between_class_share(plain * torch.tensor([1.0, 10, 0.5, 3]), y, 4),
                               between_class_share(plain, y, 4), rtol=1e-2, atol=1e-2)
    # the correlation ratio, written out on standardized features; unlabelled rows (-1) ignored
    f, labels = torch.randn(32, 6), torch.randint(0, 4, (32,))
    z = F.batch_norm(f, None, None, training=True, eps=1e-3)
    want = sum((labels == k).float().mean() * z[labels == k].mean(0).pow(2).sum() for k in range(4)) / 6
    torch.testing.assert_close(between_class_share(f, labels, 4), want)
    torch.testing.assert_close(between_class_share(torch.cat([f, 100 * torch.randn(3, 6)]),
                                                    torch.cat([labels, torch.full((3,), -1)]), 4), want)


def test_means_mode_reaches_the_encoders_but_not_the_cross_classifiers(plugins: Plugins, samples: Samples) -> None:
    method, _ = _method(plugins, samples, "method.cross_mode=means")
    idx = torch.nonzero(samples.subject != 0).squeeze(1)[:8]
    src = gather(samples, idx, torch.device("cpu"))
    method.train(True)
    f = method.encode(src.images, "source")
    term = _cross(method).encoder_loss(method, f, src)
    params = {n: list(method.models[n].parameters()) for n in ("backbone", "expression_encoder", "pose_encoder", *CROSS)}
    grads = torch.autograd.grad(term, [p for ps in params.values() for p in ps], allow_unused=True)
    reached, i = {}, 0
    for n, ps in params.items():
        reached[n] = any(gr is not None and bool(gr.abs().sum() > 0) for gr in grads[i:i + len(ps)])
        i += len(ps)
    assert reached == {"backbone": True, "expression_encoder": True, "pose_encoder": True,
                       CROSS[0]: False, CROSS[1]: False}


@pytest.mark.parametrize(("mode", "weight"), [("means", 1.0), ("confusion", 0.1), ("grl", 0.1)])
def test_each_cross_mode_has_its_measured_weight_unless_the_recipe_sets_one(mode: str, weight: float,
                                                                            plugins: Plugins, samples: Samples) -> None:
    assert _cross(_method(plugins, samples, f"method.cross_mode={mode}")[0]).weight == weight
    assert _cross(_method(plugins, samples, f"method.cross_mode={mode}", "method.cross_weight=0.3")[0]).weight == 0.3
