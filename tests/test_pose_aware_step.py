"""The pose-aware training step, one batch at a time: where each term's gradient goes (gradient
reversal, cross terms, reconstruction), the optimizer groups, the ablation switches, the
normalization of the baselines, the loss scale, and that training never reads what the target
hides (expression, pose, landmarks) under any target-free method and selection rule."""

from __future__ import annotations

import contextlib
import inspect
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
import toy_plugin
from conftest import assert_same_models, model_state, run_toy, toy_recipe
from facedapt_plugins.discriminators import ConditionalDiscriminator
from facedapt_plugins.landmarks import TEMPLATE_5
from facedapt_plugins.layers import DomainBatchNorm, warmup_lambda
from facedapt_plugins.methods.pose_aware import PoseAwareADA
from facedapt_plugins.methods.terms import CrossTerm, DomainAdversarialTerm
from torch import nn
from torch.nn import functional as F

from facedapt import hookimpl
from facedapt.data.batches import PartnerTable, gather
from facedapt.data.samples import Samples
from facedapt.errors import RecipeError
from facedapt.engine import trainer
from facedapt.engine.context import StepContext
from facedapt.engine.build import build_method
from facedapt.engine.trainer import PhaseRunner
from facedapt.method import Method, StepBatch
from facedapt.plugin_manager import Plugins, load_plugins
from facedapt.recipe.load import load_recipe
from facedapt.recipe.schema import EvalConfig

ROOT = Path(__file__).resolve().parents[1]
#: The recipe gives the pose encoder a backbone of its own (``shared_trunk: false``).
ENCODERS = ("backbone", "pose_backbone", "expression_encoder", "pose_encoder")
DISCRIMINATORS = ("expression_discriminator", "pose_discriminator")
CROSS = ("cross_pose_classifier", "cross_expression_classifier")
#: Small discriminators without dropout, so that two forward passes of one batch agree exactly.
QUIET = tuple(f"model.{d}={{name: mlp, hidden: 32, dropout: 0.0}}" for d in DISCRIMINATORS)
BATCH = 8


class Capture(StepContext):
    """A step context that keeps every update's terms, graph included, and steps nothing: the
    test asks autograd where each term's gradient goes."""

    def __init__(self, total_steps: int = 10, phase: str = "adapt") -> None:
        super().__init__({}, {}, contextlib.nullcontext, None, None, "abort", total_steps, phase)
        self.updates: dict[str, dict[str, torch.Tensor]] = {}

    def update(self, loss: torch.Tensor, group: str = "main", terms: dict[str, torch.Tensor] | None = None,
               retain_graph: bool = False) -> bool:
        self.updates[group] = {"loss": loss, **(terms or {})}
        return True


def _method(plugins: Plugins, samples: Samples, *overrides: str, method: str = "pada") -> Method:
    recipe = toy_recipe(*QUIET, *overrides, method=method).recipe
    torch.manual_seed(0)
    return build_method(plugins, recipe, len(samples.subject_ids), samples.image_shape,
                        int(samples.expression.max()) + 1)


def _batch(samples: Samples, method: Method, target: bool = True) -> StepBatch:
    """One source batch (subjects T01..) with partners where the method wants them, and one
    target batch of T00 gathered as the engine gathers it (labels, pose and landmarks hidden)."""
    g = torch.Generator().manual_seed(1)
    source = torch.nonzero(samples.subject != 0).squeeze(1)
    idx = source[torch.randperm(len(source), generator=g)[:BATCH]]
    src = gather(samples, idx, torch.device("cpu"))
    if method.needs_partners:
        src.partner = gather(samples, PartnerTable(samples).draw(idx, g), torch.device("cpu"))
    tgt = None
    if target:
        t_idx = torch.nonzero(samples.subject == 0).squeeze(1)[:BATCH]
        tgt = gather(samples, t_idx, torch.device("cpu"), labels=False, pose=False, landmarks=False)
    return StepBatch(src, tgt)


def _step(method: Method, batch: StepBatch, grl_step: int = 3, phase: str = "adapt") -> tuple[Capture, dict]:
    ctx = Capture(phase=phase)
    if "grl" in method.models:
        method.models["grl"].set_step(grl_step)  # lambda = warmup(grl_step / 10), not 0 and not 1
    method.train(True)
    losses = method.train_step(batch, ctx)
    return ctx, losses


def _grads(loss: torch.Tensor, method: Method, names: tuple[str, ...]) -> dict[str, list[torch.Tensor | None]]:
    params = {n: list(method.models[n].parameters()) for n in names}
    flat = [p for n in names for p in params[n]]
    got = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True)
    out, i = {}, 0
    for n in names:
        out[n] = list(got[i:i + len(params[n])])
        i += len(params[n])
    return out


def _reaches(grads: list[torch.Tensor | None]) -> bool:
    return any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def _assert_scaled(got: list[torch.Tensor | None], want: list[torch.Tensor | None], scale: float) -> None:
    for g, w in zip(got, want):
        if w is None:
            assert g is None or not g.any()
        else:
            assert g is not None
            torch.testing.assert_close(g, scale * w, rtol=1e-4, atol=1e-7)


@pytest.fixture(scope="module")
def samples() -> Samples:
    return toy_plugin.ToyFaces().load()


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    return load_plugins(extra=[toy_plugin])


# ----------------------------------------------------------------------------- adversarial term


def _cross(method: Any) -> CrossTerm:
    term = method.term(CrossTerm)
    assert isinstance(term, CrossTerm)
    return term


def _domain_loss(method: Method, batch: StepBatch) -> torch.Tensor:
    """The discriminators' ordinary loss, written out: BCE of source (1) versus target (0) on
    f_e and f_p of the same forward pass the step makes (no gradient reversal)."""
    m = method.models
    fs = method.encode_all(batch.source, batch.target)
    total = torch.zeros(())
    for disc, key in (("expression_discriminator", "expression"), ("pose_discriminator", "pose")):
        n = len(fs["source"][key])
        out = m[disc](torch.cat([fs["source"][key], fs["target"][key]])).float()
        total = total + 0.5 * (F.binary_cross_entropy_with_logits(out[:n], torch.ones(n))
                               + F.binary_cross_entropy_with_logits(out[n:], torch.zeros(len(out) - n)))
    term = method.term(DomainAdversarialTerm)
    assert term is not None
    return term.weight * total


def test_grl_discriminators_learn_and_encoders_get_the_reversed_scaled_gradient(plugins: Plugins,
                                                                                 samples: Samples) -> None:
    method = _method(plugins, samples, "method.max_lambda=0.8")
    batch = _batch(samples, method)
    ctx, _ = _step(method, batch)
    adversarial = ctx.updates["main"]["adversarial"]
    names = (*DISCRIMINATORS, *ENCODERS, "expression_classifier")
    got = _grads(adversarial, method, names)
    reference = _domain_loss(method, batch)
    torch.testing.assert_close(adversarial, reference)
    want = _grads(reference, method, names)
    lam = warmup_lambda(3 / 10, 0.8, 10.0)
    assert 0.1 < lam < 0.8
    for d in DISCRIMINATORS:  # the discriminators minimise their domain loss
        assert _reaches(want[d])
        _assert_scaled(got[d], want[d], 1.0)
    for e in ENCODERS:  # the encoders maximise it, scaled by the warm-up's lambda
        assert _reaches(want[e])
        _assert_scaled(got[e], want[e], -lam)
    assert not _reaches(got["expression_classifier"])


def test_alternating_updates_keep_discriminator_and_encoder_gradients_apart(plugins: Plugins,
                                                                            samples: Samples) -> None:
    method = _method(plugins, samples, "method.adversarial=alternating")
    ctx, _ = _step(method, _batch(samples, method))
    names = (*DISCRIMINATORS, *ENCODERS)
    encoder_side = _grads(ctx.updates["main"]["adversarial"], method, names)
    disc_side = _grads(ctx.updates["discriminator"]["discriminator"], method, names)
    for d in DISCRIMINATORS:
        assert not _reaches(encoder_side[d]) and _reaches(disc_side[d])
    for e in ENCODERS:
        assert _reaches(encoder_side[e]) and not _reaches(disc_side[e])


# ----------------------------------------------------------------------------- cross terms


@pytest.mark.parametrize("mode", ["confusion", "means"])
def test_confusion_reaches_the_encoders_but_not_the_cross_classifiers(mode: str, plugins: Plugins,
                                                                      samples: Samples) -> None:
    method = _method(plugins, samples, f"method.cross_mode={mode}")
    ctx, _ = _step(method, _batch(samples, method))
    names = (*CROSS, *ENCODERS, "expression_classifier", "pose_classifier")
    confusion = _grads(ctx.updates["main"]["cross"], method, names)
    for x in CROSS:
        assert not _reaches(confusion[x])
    for e in ENCODERS:
        assert _reaches(confusion[e])
    assert not _reaches(confusion["expression_classifier"]) and not _reaches(confusion["pose_classifier"])
    # the cross classifiers learn from their own update, on detached features
    learn = _grads(ctx.updates["cross"]["cross_classifiers"], method, names)
    for x in CROSS:
        assert _reaches(learn[x])
    for e in ENCODERS:
        assert not _reaches(learn[e])


def test_cross_grl_classifiers_learn_and_encoders_get_the_reversed_gradient(plugins: Plugins,
                                                                            samples: Samples) -> None:
    method = _method(plugins, samples, "method.cross_mode=grl", "method.cross_target=false")  # the source's share
    batch = _batch(samples, method)
    ctx, _ = _step(method, batch)
    m, src = method.models, batch.source
    fs = method.encode_all(batch.source, batch.target)["source"]
    reference = _cross(method).weight * (F.cross_entropy(m["cross_pose_classifier"](fs["expression"]), src.pose_bin)
                                       + F.cross_entropy(m["cross_expression_classifier"](fs["pose"]), src.expression))
    names = (*CROSS, *ENCODERS)
    got = _grads(ctx.updates["main"]["cross"], method, names)
    want = _grads(reference, method, names)
    torch.testing.assert_close(ctx.updates["main"]["cross"], reference)
    for x in CROSS:  # the classifiers learn in their own steps, not from the encoders' term
        assert _reaches(want[x]) and not _reaches(got[x])
    for e in ENCODERS:  # the encoders get the reversed gradient of the classifiers' loss
        assert _reaches(want[e])
        _assert_scaled(got[e], want[e], -1.0)
    learn = _grads(ctx.updates["cross"]["cross_classifiers"], method, names)
    for x in CROSS:
        _assert_scaled(learn[x], want[x], 1 / _cross(method).weight)
    for e in ENCODERS:
        assert not _reaches(learn[e])


@pytest.mark.parametrize("mode", ["confusion", "grl"])
def test_normalized_cross_input_carries_the_encoders_gradient_through_its_statistics(mode: str, plugins: Plugins,
                                                                                     samples: Samples) -> None:
    """With cross_normalize, what X reads is standardized over the batch; rescaling a feature
    cannot change it, so the encoders' term reaches them only through the standardized features."""
    method = _method(plugins, samples, f"method.cross_mode={mode}", "method.cross_normalize=true")
    batch = _batch(samples, method)
    ctx, _ = _step(method, batch)
    got = _grads(ctx.updates["main"]["cross"], method, (*CROSS, *ENCODERS))
    assert all(_reaches(got[e]) for e in ENCODERS) and not any(_reaches(got[x]) for x in CROSS)
    f = torch.randn(16, 5) * 3 + 1
    torch.testing.assert_close(_cross(method).cross_input(10 * f), _cross(method).cross_input(f), rtol=1e-4, atol=1e-4)


def _confusion(logits: torch.Tensor) -> torch.Tensor:
    return -F.log_softmax(logits, dim=1).mean()


@pytest.mark.parametrize("mode", ["confusion", "grl", "means"])
def test_cross_target_adds_the_targets_confusion_while_adapting_only(mode: str, plugins: Plugins,
                                                                     samples: Samples) -> None:
    """The target's share is the confusion whatever the mode: it is the form that reads no label."""
    method = _method(plugins, samples, f"method.cross_mode={mode}", "method.cross_target=true")
    reference = _method(plugins, samples, f"method.cross_mode={mode}", "method.cross_target=false")
    batch = _batch(samples, method)
    ctx, _ = _step(method, batch)
    without, _ = _step(reference, batch)
    m = method.models
    f_t = method.encode_all(batch.source, batch.target)["target"]
    target_share = ctx.updates["main"]["cross"] - without.updates["main"]["cross"].detach()
    confused = (_confusion(m["cross_pose_classifier"](f_t["expression"]))
                + _confusion(m["cross_expression_classifier"](f_t["pose"])))
    torch.testing.assert_close(target_share, _cross(method).weight * confused)
    # it reaches the encoders (through the target's pass), never the cross classifiers
    got = _grads(target_share, method, (*CROSS, *ENCODERS))
    assert all(_reaches(got[e]) for e in ENCODERS) and not any(_reaches(got[x]) for x in CROSS)
    # without a target batch (source phase) the term is the source's alone
    source_batch = _batch(samples, method, target=False)
    torch.testing.assert_close(_step(method, source_batch, phase="source")[0].updates["main"]["cross"],
                               _step(reference, source_batch, phase="source")[0].updates["main"]["cross"])


def test_pose_conditional_discriminator_judges_pose_features_with_the_pose_predictions(plugins: Plugins,
                                                                                       samples: Samples) -> None:
    method = _method(plugins, samples, "method.pose_conditional=true", "method.max_lambda=0.8",
                     "model.pose_discriminator={name: conditional, hidden: 32, dropout: 0.0}")
    m = method.models
    assert isinstance(m["pose_discriminator"], ConditionalDiscriminator)
    batch = _batch(samples, method)
    ctx, _ = _step(method, batch)
    adversarial = ctx.updates["main"]["adversarial"]
    fs = method.encode_all(batch.source, batch.target)
    n = BATCH

    def judged(disc: str, key: str, *cond: torch.Tensor) -> torch.Tensor:
        out = m[disc](torch.cat([fs["source"][key], fs["target"][key]]), *cond).float()
        return 0.5 * (F.binary_cross_entropy_with_logits(out[:n], torch.ones(n))
                      + F.binary_cross_entropy_with_logits(out[n:], torch.zeros(len(out) - n)))

    pose_logits = m["pose_classifier"](torch.cat([fs["source"]["pose"], fs["target"]["pose"]]))
    reference = method.term(DomainAdversarialTerm).weight * (judged("expression_discriminator", "expression")
                                                             + judged("pose_discriminator", "pose", pose_logits))
    torch.testing.assert_close(adversarial, reference)
    names = ("pose_discriminator", *ENCODERS, "pose_classifier")
    got, want = _grads(adversarial, method, names), _grads(reference, method, names)
    lam = warmup_lambda(3 / 10, 0.8, 10.0)
    _assert_scaled(got["pose_discriminator"], want["pose_discriminator"], 1.0)
    for e in ENCODERS:
        _assert_scaled(got[e], want[e], -lam)
    # the predictions tell D_p which view; they are not a path for the pose classifier (as in CDAN)
    assert not _reaches(got["pose_classifier"])


# ----------------------------------------------------------------------------- reconstruction


def test_reconstruction_reaches_the_decoder_identity_and_encoders_only(plugins: Plugins, samples: Samples) -> None:
    method = _method(plugins, samples)
    ctx, _ = _step(method, _batch(samples, method))
    names = ("decoder", "identity", *ENCODERS, "expression_classifier", "pose_classifier", *DISCRIMINATORS, *CROSS)
    got = _grads(ctx.updates["main"]["reconstruction"], method, names)
    for n in ("decoder", "identity", *ENCODERS):
        assert _reaches(got[n]), n
    for n in ("expression_classifier", "pose_classifier", *DISCRIMINATORS, *CROSS):
        assert not _reaches(got[n]), n


def test_own_pose_backbone_keeps_the_pose_supervision_out_of_the_expression_trunk(plugins: Plugins,
                                                                                  samples: Samples) -> None:
    """``shared_trunk: false`` (the recipe's setting): the pose loss trains the pose backbone and
    encoder and never the trunk f_e is read from; the expression loss never the pose backbone."""
    method = _method(plugins, samples)
    assert "pose_backbone" in method.optimizer_groups()["main"]
    ctx, _ = _step(method, _batch(samples, method))
    names = ("backbone", "expression_encoder", "pose_backbone", "pose_encoder")
    pose = _grads(ctx.updates["main"]["pose"], method, names)
    assert _reaches(pose["pose_backbone"]) and _reaches(pose["pose_encoder"])
    assert not _reaches(pose["backbone"]) and not _reaches(pose["expression_encoder"])
    expression = _grads(ctx.updates["main"]["expression"], method, names)
    assert _reaches(expression["backbone"]) and not _reaches(expression["pose_backbone"])
    shared = _method(plugins, samples, "method.shared_trunk=true")  # the pose loss does reach it
    ctx, _ = _step(shared, _batch(samples, shared))
    assert _reaches(_grads(ctx.updates["main"]["pose"], shared, ("backbone",))["backbone"])


def test_decoder_normalizes_source_target_and_partner_codes_apart(plugins: Plugins, samples: Samples) -> None:
    method = _method(plugins, samples)
    batch = _batch(samples, method)
    assert batch.source.partner is not None and batch.target is not None
    first_norm = next(mod for mod in method.models["decoder"].modules() if isinstance(mod, nn.BatchNorm2d))
    sizes: list[int] = []
    hook = first_norm.register_forward_hook(lambda _m, args, _out: sizes.append(len(args[0])))
    try:
        _step(method, batch)
    finally:
        hook.remove()
    partners = max(1, round(BATCH * method.partner_fraction))
    assert sizes == [BATCH, BATCH, partners]  # one pass per set: no batch statistics across them


def test_target_cross_pose_decodes_target_partners_in_a_pass_of_their_own(plugins: Plugins,
                                                                           samples: Samples) -> None:
    """With ``target_cross_pose`` a target partner view is decoded from the target image's f_e and
    the partner's f_p, in its own decoder pass; the reconstruction gradient reaches the encoders
    through it. Off by default."""
    assert not _method(plugins, samples).needs_target_partners
    method = _method(plugins, samples, "method.target_cross_pose=true")
    assert method.needs_target_partners
    batch = _batch(samples, method)
    assert batch.target is not None
    t_idx = torch.nonzero(samples.subject == 0).squeeze(1)[:BATCH]
    partner_idx = PartnerTable(samples, t_idx).draw(t_idx, torch.Generator().manual_seed(2))
    batch.target.partner = gather(samples, partner_idx, torch.device("cpu"), labels=False, pose=False, landmarks=False)
    first_norm = next(mod for mod in method.models["decoder"].modules() if isinstance(mod, nn.BatchNorm2d))
    sizes: list[int] = []
    hook = first_norm.register_forward_hook(lambda _m, args, _out: sizes.append(len(args[0])))
    try:
        ctx, _ = _step(method, batch)
    finally:
        hook.remove()
    partners = max(1, round(BATCH * method.partner_fraction))
    assert sizes == [BATCH, BATCH, partners, partners]
    # The target partners' term alone: the same step with them decoded minus without them.
    with_target = ctx.updates["main"]["reconstruction"]
    batch.target.partner = None
    without, _ = _step(method, batch)
    assert not torch.equal(with_target, without.updates["main"]["reconstruction"])
    got = _grads(with_target, method, ENCODERS)
    assert all(_reaches(got[n]) for n in ENCODERS)


# ----------------------------------------------------------------------------- optimizer groups


@pytest.mark.parametrize(("overrides", "groups"), [
    ((), {"main": {"backbone", *ENCODERS[1:], "expression_classifier", "pose_classifier", *DISCRIMINATORS,
                   "identity", "decoder"},
          "cross": set(CROSS)}),
    (("method.adversarial=alternating",),
     {"main": {"backbone", *ENCODERS[1:], "expression_classifier", "pose_classifier", "identity", "decoder"},
      "cross": set(CROSS), "discriminator": set(DISCRIMINATORS)}),
    (("method.cross_mode=grl",),
     {"main": {"backbone", *ENCODERS[1:], "expression_classifier", "pose_classifier", *DISCRIMINATORS,
               "identity", "decoder"},
      "cross": set(CROSS)}),
    (("method.cross_hidden=16", "method.cross_inner_steps=3"),
     {"main": {"backbone", *ENCODERS[1:], "expression_classifier", "pose_classifier", *DISCRIMINATORS,
               "identity", "decoder"},
      "cross": set(CROSS)}),
], ids=["default", "alternating", "cross_grl", "cross_mlp"])
def test_each_optimizer_group_holds_exactly_its_modules(overrides: tuple[str, ...], groups: dict[str, set[str]],
                                                        plugins: Plugins, samples: Samples) -> None:
    method = _method(plugins, samples, *overrides)
    assert {g: set(names) for g, names in method.optimizer_groups().items()} == groups
    # ... and the engine's optimizers hold exactly those modules' parameters
    recipe = toy_recipe(*QUIET, *overrides).recipe
    runner = PhaseRunner(recipe, plugins, method, torch.device("cpu"), "fp32", None, [])
    optimizers, _, _ = runner._optimizers("adapt")
    assert set(optimizers) == set(groups)
    for group, names in groups.items():
        held = {id(p) for pg in optimizers[group].param_groups for p in pg["params"]}
        assert held == {id(p) for n in names for p in method.models[n].parameters()}, group


# ----------------------------------------------------------------------------- ablation switches

FULL_TERMS = {"expression", "pose", "adversarial", "cross", "reconstruction", "cross_classifiers"}


@pytest.mark.parametrize(("switch", "removed_terms", "removed_models", "changed"), [
    ("method.cross_adversarial=false", {"cross", "cross_classifiers"}, set(CROSS), set()),
    ("method.cross_weight=0", {"cross", "cross_classifiers"}, set(CROSS), set()),
    ("method.reconstruction=false", {"reconstruction"}, {"decoder", "identity"}, set()),
    ("method.rec_weight=0", {"reconstruction"}, {"decoder", "identity"}, set()),
    ("method.pose_branch=false", {"pose", "cross", "cross_classifiers"},
     {"pose_backbone", "pose_encoder", "pose_classifier", "pose_discriminator", *CROSS}, {"adversarial", "reconstruction"}),
    ("method.pose_weight=0", {"pose"}, set(), set()),
    ("method.adaptation=false", {"adversarial"}, {*DISCRIMINATORS, "grl"}, set()),
    ("method.adv_weight=0", {"adversarial"}, {*DISCRIMINATORS, "grl"}, set()),
    ("method.adapt_pose_features=false", set(), {"pose_discriminator"}, {"adversarial"}),
    ("method.identity_code=none", set(), {"identity"}, {"reconstruction"}),
], ids=lambda v: v.removeprefix("method.") if isinstance(v, str) else "")
def test_each_ablation_switch_removes_exactly_its_term(switch: str, removed_terms: set[str],
                                                       removed_models: set[str], changed: set[str],
                                                       plugins: Plugins, samples: Samples) -> None:
    # Without cross-pose partners, so the source pass (and its batch statistics) is the same in both.
    full = _method(plugins, samples, "method.cross_pose=false")
    ablated = _method(plugins, samples, "method.cross_pose=false", switch)
    assert set(full.models) - set(ablated.models) == removed_models and set(ablated.models) <= set(full.models)
    for name, module in ablated.models.items():  # the same weights wherever the shapes agree
        own = module.state_dict()
        module.load_state_dict({**own, **{k: v for k, v in full.models[name].state_dict().items()
                                          if k in own and own[k].shape == v.shape}})
    batch = _batch(samples, full)
    _, before = _step(full, batch)
    _, after = _step(ablated, batch)
    assert set(before) - {"loss"} == FULL_TERMS
    assert set(after) - {"loss"} == FULL_TERMS - removed_terms
    for term in FULL_TERMS - removed_terms - changed:
        torch.testing.assert_close(after[term], before[term], msg=f"{switch} changed {term}")
    for term in changed:
        assert not torch.equal(after[term], before[term])


def test_cross_pose_switch_removes_only_the_partner_views(plugins: Plugins, samples: Samples) -> None:
    with_pairs = _method(plugins, samples)
    without = _method(plugins, samples, "method.cross_pose=false")
    assert with_pairs.needs_partners and not without.needs_partners
    assert set(with_pairs.models) == set(without.models)


def test_source_phase_has_no_adaptation_terms(plugins: Plugins, samples: Samples) -> None:
    method = _method(plugins, samples)
    ctx, losses = _step(method, _batch(samples, method, target=False), phase="source")
    assert set(losses) - {"loss"} == FULL_TERMS - {"adversarial"}
    assert int(method.models["grl"].num_steps) == 3  # the warm-up counts adaptation steps only


# ----------------------------------------------------------------------------- normalization


def _defaults(factory: Any) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(factory).parameters.items()}


def test_adapting_baselines_normalize_as_the_full_method(plugins: Plugins) -> None:
    full = _defaults(PoseAwareADA)
    methods = plugins.registry("methods")
    for name in methods.names():
        defaults = _defaults(methods.get(name))
        for key in ("norm", "adabn"):
            if key in defaults:
                assert defaults[key] == full[key], f"{name}.{key}"
    # The bundled recipes say so, rather than leaning on the defaults.
    for recipe in ("pada", "dann", "cdan"):
        kwargs = load_recipe(ROOT / "recipes" / f"{recipe}.yaml").recipe.method.kwargs
        assert (kwargs["norm"], kwargs["adabn"]) == ("per_domain", True), recipe


def test_dann_keeps_target_statistics_out_of_the_source_ones(plugins: Plugins, samples: Samples) -> None:
    method = _method(plugins, samples, method="dann")
    norm = next(mod for mod in method.models["backbone"].modules() if isinstance(mod, DomainBatchNorm))
    before = norm.stats("source")[0].clone()
    batch = _batch(samples, method)
    _step(method, batch)
    source_only = _method(plugins, samples, method="dann")
    _step(source_only, StepBatch(batch.source, None), phase="source")
    # the source statistics moved exactly as a step on the source batch alone moves them
    after = norm.stats("source")[0]
    assert not torch.equal(after, before)
    alone = next(mod for mod in source_only.models["backbone"].modules() if isinstance(mod, DomainBatchNorm))
    torch.testing.assert_close(after, alone.stats("source")[0])


# ----------------------------------------------------------------------------- loss scale


class CountingScaler(torch.amp.GradScaler):
    def __init__(self) -> None:
        super().__init__("cpu", init_scale=1024.0)
        self.updates = 0

    def update(self, new_scale: Any = None) -> None:
        self.updates += 1
        super().update(new_scale)


def test_loss_scale_is_updated_once_per_step(plugins: Plugins, samples: Samples) -> None:
    method = _method(plugins, samples)
    recipe = toy_recipe(*QUIET).recipe
    runner = PhaseRunner(recipe, plugins, method, torch.device("cpu"), "fp32", None, [])
    optimizers, params, _ = runner._optimizers("adapt")
    scaler = CountingScaler()
    ctx = StepContext(optimizers, params, contextlib.nullcontext, scaler, None, "abort", 10, "adapt")
    method.train(True)
    for step in range(2):
        ctx.begin_step(step)
        method.train_step(_batch(samples, method), ctx)
        assert scaler.updates == step  # main and cross groups stepped, the scale not yet updated
        ctx.end_step()
        assert scaler.updates == step + 1
    # a group stepped twice in one step (inner updates) gets the update GradScaler needs between
    ctx.begin_step(2)
    for _ in range(2):
        loss = sum(p.sum() for p in method.models["cross_pose_classifier"].parameters())
        ctx.update(loss, "cross")
    ctx.end_step()
    assert scaler.updates == 4


def test_the_loop_ends_every_step(plugins: Plugins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[int] = []

    class Spy(StepContext):
        def end_step(self) -> None:
            ended.append(self.step)
            super().end_step()

    monkeypatch.setattr(trainer, "StepContext", Spy)
    run_toy(plugins, tmp_path / "run", "data.target_subjects=[T00]")
    assert ended == [*range(6), *range(4)]  # 6 source steps, then 4 adaptation steps


# ----------------------------------------------------------------------------- hidden target data


class MarkedToy(toy_plugin.ToyFaces):
    """The toy faces with five landmarks per image (a jittered template)."""

    name = "toy_marked"

    def load(self) -> Samples:
        samples = super().load()
        g = torch.Generator().manual_seed(5)
        template = torch.tensor(TEMPLATE_5) * self.image_size
        samples.landmarks = template + 0.5 * torch.randn(len(samples), 5, 2, generator=g)
        return samples


class PoisonedToy(MarkedToy):
    """The same faces with garbage expression labels, yaws and landmarks for subject T00."""

    name = "toy_poisoned_all"

    def fingerprint(self) -> str:
        return "poisoned-all-" + super().fingerprint()

    def load(self) -> Samples:
        samples = super().load()
        t00 = samples.subject == samples.subject_ids.index("T00")
        n = int(t00.sum())
        samples.expression[t00] = (samples.expression[t00] + 1 + torch.arange(n) % 2) % self.classes
        samples.yaw[t00] = 15.0 - 1.5 * samples.yaw[t00]  # other yaws, other pose bins
        assert samples.landmarks is not None
        samples.landmarks[t00] = samples.landmarks[t00].flip(1) * 0.8 + 1.0  # scrambled points
        return samples


class PoisonPlugin:
    @hookimpl
    def facedapt_register_datasets(self, registry: Any) -> None:
        registry.register("toy_marked", MarkedToy)
        registry.register("toy_poisoned_all", PoisonedToy)


def _target_free_methods() -> list[str]:
    methods = load_plugins().registry("methods")
    return [n for n in methods.names() if not methods.get(n)().uses_target_labels]


#: Every selection rule that reads no target label (oracle reads them by definition).
SELECTIONS = [s for s in typing.get_args(typing.get_type_hints(EvalConfig)["selection"]) if s != "oracle"]
#: Augmentations that read landmarks and pose, applied to target batches too.
READERS = ("data.augment=[{name: flip, p: 0.5}, {name: align}, {name: pose_warp, max_degrees: 10}]",
           "data.augment_target=true", "data.target_subjects=[T00]", "train.eval_every=2")


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("method", _target_free_methods())
def test_training_never_reads_target_labels_pose_or_landmarks(method: str, selection: str, tmp_path: Path) -> None:
    plugins = load_plugins(extra=[toy_plugin, PoisonPlugin()])
    extra = (*READERS, f"eval.selection={selection}")
    clean = run_toy(plugins, tmp_path / "clean", *extra, "data.dataset={name: toy_marked}", method=method)
    poisoned = run_toy(plugins, tmp_path / "poisoned", *extra, "data.dataset={name: toy_poisoned_all}", method=method)
    # The poison is real: evaluation, which reads expression and yaw, sees it ...
    assert poisoned["confusion"] != clean["confusion"]
    assert set(poisoned["per_yaw"]) != set(clean["per_yaw"])
    # ... while the adapted weights are bit for bit the same.
    assert_same_models(model_state(tmp_path / "clean" / "subjects" / "T00" / "model.pt"),
                       model_state(tmp_path / "poisoned" / "subjects" / "T00" / "model.pt"))


@pytest.mark.parametrize(("flags", "visible"), [
    ((), (False, False)),
    (("data.use_target_pose=true",), (True, False)),
    (("data.use_target_landmarks=true",), (False, True)),
], ids=["hidden", "pose", "landmarks"])
def test_target_pose_and_landmarks_reach_methods_only_when_asked(flags: tuple[str, ...], visible: tuple[bool, bool],
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seen: set[tuple[bool, ...]] = set()
    original = PoseAwareADA.train_step

    def record(self: PoseAwareADA, batch: StepBatch, ctx: Any) -> dict[str, torch.Tensor]:
        if batch.target is not None:
            t = batch.target
            seen.add((t.yaw is not None, t.landmarks is not None, t.expression is not None, t.subject is not None))
        return original(self, batch, ctx)

    monkeypatch.setattr(PoseAwareADA, "train_step", record)
    plugins = load_plugins(extra=[toy_plugin, PoisonPlugin()])
    run_toy(plugins, tmp_path / "run", "data.target_subjects=[T00]", "data.dataset={name: toy_marked}", *flags)
    assert seen == {(*visible, False, False)}


@pytest.mark.parametrize(("method", "overrides", "terms"), [
    ("source_only", (), []),
    ("adabn", (), []),
    ("tent", (), []),
    ("target_supervised", (), []),
    ("dann", (), ["DomainAdversarialTerm"]),
    ("cdan", (), ["DomainAdversarialTerm"]),
    ("pada", (), ["DomainAdversarialTerm", "CrossTerm", "ReconstructionTerm"]),
    ("pada", ("method.cross_adversarial=false",), ["DomainAdversarialTerm", "ReconstructionTerm"]),
    ("pada", ("method.reconstruction=false",), ["DomainAdversarialTerm", "CrossTerm"]),
    ("pada", ("method.pose_branch=false",), ["DomainAdversarialTerm", "ReconstructionTerm"]),
    ("pada", ("method.target_entropy_weight=0.1",),
     ["DomainAdversarialTerm", "TargetEntropyTerm", "CrossTerm", "ReconstructionTerm"]),
])
def test_methods_are_compositions_of_terms(method: str, overrides: tuple[str, ...], terms: list[str],
                                           plugins: Plugins, samples: Samples) -> None:
    """Every built-in method is the shared networks plus the terms that make it; a baseline or
    an ablation differs from the full method in its list of terms only."""
    recipe = toy_recipe(*overrides, method=method).recipe  # the recipes' own discriminators
    m = build_method(plugins, recipe, len(samples.subject_ids), samples.image_shape, 3)
    assert [type(t).__name__ for t in m.terms] == terms
    adversarial = m.term(DomainAdversarialTerm)
    if method in ("dann", "cdan"):
        assert adversarial is not None and adversarial.conditional == (method == "cdan")
        assert set(m.models) >= {"expression_discriminator", "grl"} and "pose_discriminator" not in m.models


def test_a_component_that_cannot_take_what_the_method_passes_is_named(plugins: Plugins, samples: Samples) -> None:
    with pytest.raises(RecipeError, match="'mlp' does not take 'num_classes'") as err:
        _method(plugins, samples, "method.pose_conditional=true", "model.pose_discriminator={name: mlp}")
    assert err.value.key == "model.pose_discriminator"
