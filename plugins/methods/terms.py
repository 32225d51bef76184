"""The terms of the pose-aware objective, each owning its networks and its part of the step.

A method (facedapt_plugins.methods.networks.Networks) holds the shared networks (backbone,
encoders, classifiers) and a list of terms; DANN, CDAN, the full pose-aware method and its
ablations are compositions of these. A term

- builds the modules it owns (``build``, added to the method's models in order) and names the
  optimizer groups of its own (``optimizer_groups``; the rest of the models train in ``main``);
- may act before the encoder loss (``before``: e.g. the cross classifiers catch up), adds its
  weighted loss to the encoder objective (``losses``), and may act after the encoder update
  (``after``: e.g. the discriminator step of alternating updates).

Terms read the step through :class:`StepState`: the batches, every set's features, the source
logits and whether the step adapts.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
from facedapt_plugins.layers import GradientReversalLayer, grad_reverse
from facedapt_plugins.losses import Confusion, DomainAdversarial, entropy
from torch import nn
from torch.nn import functional as F

from facedapt.errors import RecipeError
from facedapt.method import Batch
from facedapt.recipe.schema import Component

#: The method a term belongs to: facedapt_plugins.methods.networks.Networks (which imports
#: this module, so it is not imported back).
Networks = Any

#: The cross weight of each cross mode where a recipe gives none (benchmarks/disentangle.py).
CROSS_WEIGHTS = {"means": 1.0, "confusion": 0.1, "grl": 0.1}


def choice(name: str, value: Any, options: tuple) -> Any:
    if value not in options:
        raise RecipeError(f"{value!r} is not one of {', '.join(map(str, options))}", key=f"method.{name}")
    return value


def non_negative(**values: float) -> None:
    for key, value in values.items():
        if value < 0:
            raise RecipeError(f"must not be negative, got {value}", key=f"method.{key}")


@attrs.define
class StepState:
    """What the terms of one step read."""

    source: Batch
    target: Batch | None
    features: dict[str, dict[str, torch.Tensor]]  # "source", "target", "partner" -> named features
    logits_s: torch.Tensor  # expression logits of the source batch
    adapting: bool  # a target batch, a method that adapts, no target labels

    @property
    def f_s(self) -> dict[str, torch.Tensor]:
        return self.features["source"]

    @property
    def f_t(self) -> dict[str, torch.Tensor] | None:
        return self.features.get("target")


class Term:
    """One part of the encoder objective (see the module docstring)."""

    #: Share of the source batch whose cross-pose partner views (another view of the same
    #: capture) this term reads; set by ``build``. The engine gathers partners where any is > 0.
    partner_fraction: float = 0.0
    #: Whether it reads partner views of the target's captures too (the same share of the batch).
    target_partners: bool = False

    def build(self, net: Networks, ctx: Any) -> dict[str, nn.Module]:
        return {}

    def optimizer_groups(self, models: dict[str, nn.Module]) -> dict[str, list[str]]:
        return {}

    def before(self, net: Networks, source: Batch, features: dict[str, dict[str, torch.Tensor]],
               ctx: Any) -> dict[str, torch.Tensor]:
        """Runs before the encoder loss; returns values to log (not part of the loss)."""
        return {}

    def losses(self, net: Networks, state: StepState) -> dict[str, torch.Tensor]:
        """Weighted terms of the encoder objective (inside the step's autocast)."""
        return {}

    def after(self, net: Networks, state: StepState, ctx: Any) -> dict[str, torch.Tensor]:
        """Runs after the encoder update; returns values to log."""
        return {}


class DomainAdversarialTerm(Term):
    """Domain discriminators on f_e (and f_p), against which the encoders learn domain-invariant
    features: with gradient reversal (``grl``: one update, the reversed gradient reaches the
    encoders, scaled by the warm-up lambda), or ``alternating`` (the encoders fool frozen
    discriminators with flipped labels, then the discriminators update on detached features).
    ``conditional``: the discriminator of f_e also sees the expression predictions (CDAN; with
    ``entropy_conditioning``, CDAN+E); ``joint``: one discriminator on [f_e, f_p];
    ``pose_features``: a second discriminator on f_p (where the method has a pose branch), with
    ``pose_conditional`` conditioned on the pose classifier's predictions, so that it aligns
    f_p within each predicted view rather than the two domains' distributions of views (which
    differ under pose shift)."""

    def __init__(self, weight: float, adversarial: Literal["grl", "alternating"] = "grl", pose_features: bool = True,
                 joint: bool = False, conditional: bool = False, entropy_conditioning: bool = False,
                 max_lambda: float = 1.0, warmup_gamma: float = 10.0, pose_conditional: bool = False) -> None:
        choice("adversarial", adversarial, ("grl", "alternating"))
        non_negative(adv_weight=weight)
        if conditional and joint:
            raise RecipeError("a conditional discriminator conditions f_e on expression predictions; it cannot be joint",
                              key="method.joint_discriminator")
        self.weight, self.adversarial, self.pose_features = weight, adversarial, pose_features
        self.joint, self.conditional, self.entropy_conditioning = joint, conditional, entropy_conditioning
        self.max_lambda, self.warmup_gamma, self.pose_conditional = max_lambda, warmup_gamma, pose_conditional
        self.dom = DomainAdversarial()

    def build(self, net: Networks, ctx: Any) -> dict[str, nn.Module]:
        m: dict[str, nn.Module] = {}
        self.joint = self.joint and net.pose_branch
        if self.joint:
            m["expression_discriminator"] = ctx.build("expression_discriminator", "mlp",
                                                      in_features=net.feature_dim + net.pose_feature_dim)
        elif self.conditional:
            m["expression_discriminator"] = ctx.build("expression_discriminator", "conditional",
                                                      in_features=net.feature_dim, num_classes=ctx.num_classes)
        else:
            m["expression_discriminator"] = ctx.build("expression_discriminator", "mlp", in_features=net.feature_dim)
        if net.pose_branch and self.pose_features and not self.joint:
            m["pose_discriminator"] = (
                ctx.build("pose_discriminator", "conditional", in_features=net.pose_feature_dim,
                          num_classes=ctx.num_pose_bins) if self.pose_conditional
                else ctx.build("pose_discriminator", "mlp", in_features=net.pose_feature_dim))
        m["grl"] = GradientReversalLayer(self.max_lambda, self.warmup_gamma, max_steps=1, auto_step=False)
        self.names = [n for n in ("expression_discriminator", "pose_discriminator") if n in m]
        return m

    def optimizer_groups(self, models: dict[str, nn.Module]) -> dict[str, list[str]]:
        return {"discriminator": self.names} if self.adversarial == "alternating" else {}

    def before(self, net: Networks, source: Batch, features: dict[str, dict[str, torch.Tensor]],
               ctx: Any) -> dict[str, torch.Tensor]:
        net.models["grl"].max_steps = ctx.total_steps  # the warm-up spans the adaptation phase
        return {}

    def losses(self, net: Networks, state: StepState) -> dict[str, torch.Tensor]:
        if not state.adapting:
            return {}
        if self.adversarial == "grl":
            return {"adversarial": self.weight * self.domain_loss(net, state.f_s, state.f_t, state.logits_s, reverse=True)}
        with _no_param_grad(*[net.models[n] for n in self.names]):
            return {"adversarial": self.weight * self.domain_loss(net, state.f_s, state.f_t, state.logits_s,
                                                                  reverse=False, mode="flipped")}

    def after(self, net: Networks, state: StepState, ctx: Any) -> dict[str, torch.Tensor]:
        if not state.adapting:
            return {}
        out = {}
        if self.adversarial == "alternating":
            assert state.f_t is not None
            with ctx.autocast():
                detached_s = {k: v.detach() for k, v in state.f_s.items()}
                detached_t = {k: v.detach() for k, v in state.f_t.items()}
                disc = self.domain_loss(net, detached_s, detached_t, state.logits_s.detach(), reverse=False)
            ctx.update(disc, "discriminator", {"discriminator": disc})
            out["discriminator"] = disc
        net.models["grl"].advance()
        return out

    def domain_loss(self, net: Networks, f_s: dict, f_t: dict, logits_s: torch.Tensor, reverse: bool,
                    mode: str = "discriminator") -> torch.Tensor:
        """Domain loss of the discriminators on both features. Each discriminator sees the
        concatenated source+target batch once, so its normalization mixes the domains."""
        m = net.models
        n = len(logits_s)

        def judge(disc: nn.Module, xs: torch.Tensor, xt: torch.Tensor, *cond: torch.Tensor,
                  weights: tuple = (None, None)) -> torch.Tensor:
            x = torch.cat([xs, xt])
            x = m["grl"](x) if reverse else x
            out = disc(x, *cond).float()
            return self.dom(out[:n], out[n:], *weights, mode=mode)

        if self.joint:
            return judge(m["expression_discriminator"], torch.cat([f_s["expression"], f_s["pose"]], 1),
                         torch.cat([f_t["expression"], f_t["pose"]], 1))
        if self.conditional:
            logits_t = m["expression_classifier"](f_t["expression"])
            weights: tuple = (None, None)
            if self.entropy_conditioning:  # CDAN+E: confident samples count more
                weights = (1.0 + torch.exp(-entropy(logits_s.detach())), 1.0 + torch.exp(-entropy(logits_t.detach())))
            logits = torch.cat([logits_s, logits_t])
            loss = judge(m["expression_discriminator"], f_s["expression"], f_t["expression"],
                         m["grl"](logits) if reverse else logits, weights=weights)
        else:
            loss = judge(m["expression_discriminator"], f_s["expression"], f_t["expression"])
        if "pose_discriminator" in m:
            cond = []
            if self.pose_conditional:
                pose_logits = m["pose_classifier"](torch.cat([f_s["pose"], f_t["pose"]]))
                cond = [m["grl"](pose_logits) if reverse else pose_logits]
            loss = loss + judge(m["pose_discriminator"], f_s["pose"], f_t["pose"], *cond)
        return loss


class TargetEntropyTerm(Term):
    """Entropy of the expression predictions on the target batch (confident target predictions)."""

    def __init__(self, weight: float) -> None:
        non_negative(target_entropy_weight=weight)
        self.weight = weight

    def losses(self, net: Networks, state: StepState) -> dict[str, torch.Tensor]:
        if not state.adapting or state.f_t is None:
            return {}
        logits_t = net.models["expression_classifier"](state.f_t["expression"])
        return {"target_entropy": self.weight * entropy(logits_t).mean()}


class CrossTerm(Term):
    """Cross-adversarial disentanglement: f_e must not tell the pose, f_p must not tell the
    expression. Cross classifiers X_p (pose from f_e) and X_e (expression from f_p) learn in
    steps of their own (``inner_steps`` updates per step at ``lr``, on detached features) and
    the encoders learn against them: ``confusion`` (push X's predictions toward uniform), ``grl``
    (the reversed gradient of X's cross-entropy), or ``means`` (pull the class means together:
    the correlation ratio, which leaves a linear probe nothing to separate by). With ``target``
    the confusion acts on the target's features too while adapting, whatever the mode (it is
    the form that reads no label): under pose shift the views the source lacks are the target's."""

    def __init__(self, mode: Literal["confusion", "grl", "means"] = "means", weight: float | None = None,
                 lr: float | None = None, inner_steps: int = 1, hidden: int = 0, normalize: bool = False,
                 target: bool = False) -> None:
        choice("cross_mode", mode, ("confusion", "grl", "means"))
        if inner_steps < 1:
            raise RecipeError(f"must be at least 1, got {inner_steps}", key="method.cross_inner_steps")
        if lr is not None and lr <= 0:
            raise RecipeError(f"must be positive (or null), got {lr}", key="method.cross_lr")
        non_negative(cross_hidden=hidden)
        if weight is None:  # measured per mode (docs/method.md): a bounded share, or a classifier's loss
            weight = CROSS_WEIGHTS[mode]
        non_negative(cross_weight=weight)
        self.mode, self.weight, self.lr, self.inner_steps = mode, weight, lr, inner_steps
        self.hidden, self.normalize, self.target = hidden, normalize, target
        self.confusion = Confusion()

    def build(self, net: Networks, ctx: Any) -> dict[str, nn.Module]:
        cross = Component("mlp_classifier", {"hidden": self.hidden}) if self.hidden else "linear"
        return {"cross_pose_classifier": ctx.build("cross_pose_classifier", cross, in_features=net.feature_dim,
                                                   num_classes=ctx.num_pose_bins),
                "cross_expression_classifier": ctx.build("cross_expression_classifier", cross,
                                                         in_features=net.pose_feature_dim, num_classes=ctx.num_classes)}

    def optimizer_groups(self, models: dict[str, nn.Module]) -> dict[str, list[str]]:
        return {"cross": ["cross_pose_classifier", "cross_expression_classifier"]}

    def before(self, net: Networks, source: Batch, features: dict[str, dict[str, torch.Tensor]],
               ctx: Any) -> dict[str, torch.Tensor]:
        # The cross classifiers catch up with the current features before the encoders try to
        # remove what they read: an encoder step against a lagging classifier is evaded, not won.
        return {"cross_classifiers": self.train_classifiers(net, features["source"], source, ctx)}

    def losses(self, net: Networks, state: StepState) -> dict[str, torch.Tensor]:
        loss = self.encoder_loss(net, state.f_s, state.source)
        if self.target and state.adapting and state.f_t is not None:
            loss = loss + self.confusion_loss(net, state.f_t)
        return {"cross": self.weight * loss}

    def cross_input(self, f: torch.Tensor) -> torch.Tensor:
        """What a cross classifier reads: with ``normalize`` each feature standardized over the
        batch (as a linear probe standardizes), so that neither side can win by rescaling a
        direction; the encoders' gradient flows through the statistics too."""
        return F.batch_norm(f, None, None, training=True) if self.normalize else f

    def logits(self, net: Networks, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        m = net.models
        return {"pose_from_expression": m["cross_pose_classifier"](self.cross_input(features["expression"])),
                "expression_from_pose": m["cross_expression_classifier"](self.cross_input(features["pose"]))}

    def encoder_loss(self, net: Networks, f: dict[str, torch.Tensor], src: Batch) -> torch.Tensor:
        """Encoders learn features from which the other label cannot be read: with ``means`` by
        pulling its class means together, otherwise against the cross classifiers, whose own
        parameters take no gradient here (they learn in their own steps)."""
        if self.mode == "means":
            share = between_class_share(f["pose"], src.expression, net.num_classes)
            if src.pose_bin is not None:
                share = share + between_class_share(f["expression"], src.pose_bin, net.num_pose_bins)
            return share
        if self.mode == "confusion":
            return self.confusion_loss(net, f)
        m = net.models
        xp, xe = m["cross_pose_classifier"], m["cross_expression_classifier"]
        with _no_param_grad(xp, xe):
            # grl: the encoders receive the reversed gradient of the classifiers' cross-entropy.
            return self.classifier_loss(net, xp(self.cross_input(grad_reverse(f["expression"]))),
                                        xe(self.cross_input(grad_reverse(f["pose"]))), src)

    def confusion_loss(self, net: Networks, f: dict[str, torch.Tensor]) -> torch.Tensor:
        """The cross classifiers' predictions pushed toward uniform (no labels read)."""
        xp, xe = net.models["cross_pose_classifier"], net.models["cross_expression_classifier"]
        with _no_param_grad(xp, xe):
            return (self.confusion(xp(self.cross_input(f["expression"])).float())
                    + self.confusion(xe(self.cross_input(f["pose"])).float()))

    def train_classifiers(self, net: Networks, f: dict[str, torch.Tensor], src: Batch, ctx: Any) -> torch.Tensor:
        """``inner_steps`` updates of the cross classifiers on the batch's detached features, at
        ``lr`` where set. Returns the cross-entropy before the first update: the classifiers'
        loss on features not yet fitted."""
        m = net.models
        xp, xe = m["cross_pose_classifier"], m["cross_expression_classifier"]
        opt = ctx.optimizers.get("cross")
        if self.lr is not None and opt is not None:
            for group in opt.param_groups:  # constant: the recipe's scheduler does not reach it
                group["lr"] = self.lr
        with torch.no_grad():
            fe = self.cross_input(f["expression"].detach().float())
            fp = self.cross_input(f["pose"].detach().float())
        losses = []
        for _ in range(self.inner_steps):
            with ctx.autocast():
                loss = self.classifier_loss(net, xp(fe), xe(fp), src)
            ctx.update(loss, "cross", {"cross_classifiers": loss})
            losses.append(loss.detach())
        return losses[0]

    @staticmethod
    def classifier_loss(net: Networks, pose_logits: torch.Tensor, expression_logits: torch.Tensor,
                        src: Batch) -> torch.Tensor:
        loss = net.ce(expression_logits.float(), src.expression)
        if src.pose_bin is not None:
            loss = loss + net.ce(pose_logits.float(), src.pose_bin)
        return loss


class ReconstructionTerm(Term):
    """Face reconstruction by a decoder G from (f_e, f_p, identity code): each face from its own
    codes, and with ``cross_pose`` a partner view of the same capture from f_e of the first
    view and f_p of the partner, so f_e must carry the expression whatever the pose. With
    ``target_cross_pose`` the target person's captures are paired the same way (views taken
    together, no labels): under pose shift the target is where the views the source lacks are.
    ``identity_code``: a learnt code per source person plus one for the target person."""

    def __init__(self, weight: float, identity_code: Literal["none", "subject_embedding"] = "subject_embedding",
                 identity_dim: int = 16, cross_pose: bool = True, partner_fraction: float = 0.5,
                 rec_size: int = 32, target_cross_pose: bool = False) -> None:
        choice("identity_code", identity_code, ("none", "subject_embedding"))
        if not 0 < partner_fraction <= 1:
            raise RecipeError(f"must be in (0, 1], got {partner_fraction}", key="method.partner_fraction")
        if rec_size < 8:
            raise RecipeError(f"must be at least 8, got {rec_size}", key="method.rec_size")
        non_negative(rec_weight=weight)
        self.weight, self.identity_code, self.identity_dim = weight, identity_code, identity_dim
        self.cross_pose, self.fraction, self.rec_size = cross_pose, partner_fraction, rec_size
        self.target_cross_pose = target_cross_pose

    def build(self, net: Networks, ctx: Any) -> dict[str, nn.Module]:
        self.partner_fraction = self.fraction if self.cross_pose and net.pose_branch else 0.0
        self.target_partners = self.target_cross_pose and self.partner_fraction > 0
        _, h, _ = ctx.image_shape
        m: dict[str, nn.Module] = {}
        code = net.feature_dim + (net.pose_feature_dim if net.pose_branch else 0)
        if self.identity_code == "subject_embedding":
            # One code per source subject plus one for the target person (a single person).
            m["identity"] = nn.Embedding(ctx.num_subjects + 1, self.identity_dim)
            code += self.identity_dim
        self.target_identity = ctx.num_subjects
        # Reconstructing a downsampled face keeps the decoder cheap; expression and pose
        # survive at 32 px, and the encoders still see full-size images.
        self.rec_size = min(self.rec_size, h)
        m["decoder"] = ctx.build("decoder", "conv", in_features=code, out_channels=ctx.image_shape[0],
                                 image_size=self.rec_size)
        self.rec_loss = ctx.build("reconstruction_loss", "l1")
        return m

    def losses(self, net: Networks, state: StepState) -> dict[str, torch.Tensor]:
        return {"reconstruction": self.weight * self.loss(net, state.source, state.features, state.target)}

    def loss(self, net: Networks, src: Batch, fs: dict[str, dict[str, torch.Tensor]], tgt: Batch | None) -> torch.Tensor:
        """L_rec over source, target and cross-pose pairs. Each set is decoded in its own pass,
        so the decoder's batch statistics never mix the domains (nor real codes with swapped
        ones); one loss over all of them weighs every image alike."""
        m = net.models
        sets = [(fs["source"]["expression"], fs["source"].get("pose"), src.subject, src.images)]
        if "target" in fs and tgt is not None:
            target_id = torch.full((len(tgt.images),), self.target_identity, device=tgt.images.device, dtype=torch.long)
            sets.append((fs["target"]["expression"], fs["target"].get("pose"), target_id, tgt.images))
        if "partner" in fs and src.partner is not None:
            k = len(fs["partner"]["pose"])
            sets.append((fs["source"]["expression"][:k], fs["partner"]["pose"],
                         src.subject[:k] if src.subject is not None else None, src.partner.images[:k]))
        if "target_partner" in fs and tgt is not None and tgt.partner is not None:
            k = len(fs["target_partner"]["pose"])
            sets.append((fs["target"]["expression"][:k], fs["target_partner"]["pose"], target_id[:k], tgt.partner.images[:k]))
        with_identity = "identity" in m and all(s[2] is not None for s in sets)
        outputs = []
        for expression, pose, subject, _ in sets:
            code = [expression] + ([pose] if net.pose_branch else []) + ([m["identity"](subject)] if with_identity else [])
            outputs.append(m["decoder"](torch.cat(code, 1)).float())
        goal = torch.cat([s[3] for s in sets]).float()
        if goal.shape[-1] != self.rec_size:
            goal = F.interpolate(goal, size=(self.rec_size, self.rec_size), mode="area")
        return self.rec_loss(torch.cat(outputs), goal)


def between_class_share(f: torch.Tensor, y: torch.Tensor, num_classes: int, eps: float = 1e-3) -> torch.Tensor:
    """Share of each batch-standardized feature's variance explained by the class means of ``y``
    (the correlation ratio, averaged over features; 0 when every class has the same mean, which
    leaves a linear probe nothing to separate by). Labels of -1 are ignored. Built from sums
    taken over every process of a distributed run, so that it is the global batch's share.
    ``eps`` keeps features that barely vary from amplifying rounding noise."""
    f = f.float()
    onehot = F.one_hot(y.long().clamp_min(0), num_classes).float() * (y >= 0).float().unsqueeze(1)
    valid = onehot.sum(1, keepdim=True)
    d = f.shape[1]
    sums = _global_sum(torch.cat([onehot.sum(0), (onehot.t() @ f).flatten()]))
    counts, class_sums = sums[:num_classes], sums[num_classes:].view(num_classes, d)
    n = counts.sum().clamp_min(1)
    mean = class_sums.sum(0) / n
    # Two passes (mean, then squared deviations): E[x^2] - E[x]^2 would cancel badly.
    var = _global_sum(((f - mean).pow(2) * valid).sum(0)) / n
    means = (class_sums / counts.clamp_min(1).unsqueeze(1) - mean) / (var + eps).sqrt()
    return (counts / n * means.pow(2).sum(1)).sum() / d


def _global_sum(x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over the processes of a distributed run (differentiable), else ``x``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(x)
    return x


class _no_param_grad:
    """Parameters of the given modules take no gradient inside the block."""

    def __init__(self, *modules: nn.Module) -> None:
        self.params = [p for mod in modules for p in mod.parameters()]

    def __enter__(self) -> None:
        self.flags = [p.requires_grad for p in self.params]
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: Any) -> None:
        for p, flag in zip(self.params, self.flags):
            p.requires_grad_(flag)
