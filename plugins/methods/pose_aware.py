"""Pose-aware adversarial domain adaptation (a reconstruction of arXiv 2007.05932).

Not TLlib's "Partial Adversarial Domain Adaptation", which shares the acronym PADA.

Networks (roles a recipe may set under ``model:``): a backbone B, expression and pose encoders
E_e and E_p, classifiers C_e and C_p, domain discriminators D_e and D_p (or one joint), cross
classifiers X_p (pose from f_e) and X_e (expression from f_p), and a decoder G. The encoder
objective is ``L_sup + adv_weight * L_adv + cross_weight * L_cross + rec_weight * L_rec``.
Every strategy has a switch; the baselines (source-only, AdaBN, DANN, CDAN, the target-
supervised upper bound) are configurations of the same networks, so comparisons differ only
in the terms switched on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from facedapt_plugins.layers import (
    DomainBatchNorm,
    GradientReversalLayer,
    convert_to_domain_bn,
    domain,
    grad_reverse,
    recompute_bn_stats,
)
from facedapt_plugins.losses import Confusion, DomainAdversarial, entropy
from torch import nn
from torch.nn import functional as F

from facedapt.errors import RecipeError
from facedapt.method import Batch, Method, StepBatch
from facedapt.recipe.schema import Component

#: The modules whose normalization statistics are per domain.
TRUNK = ("backbone", "pose_backbone", "expression_encoder", "pose_encoder")

ROLES = {
    "backbone": "backbones",
    "pose_backbone": "backbones",
    "expression_encoder": "heads",
    "pose_encoder": "heads",
    "expression_classifier": "heads",
    "pose_classifier": "heads",
    "cross_pose_classifier": "heads",
    "cross_expression_classifier": "heads",
    "expression_discriminator": "discriminators",
    "pose_discriminator": "discriminators",
    "decoder": "decoders",
    "reconstruction_loss": "losses",
}


#: The cross weight of each cross mode where a recipe gives none (benchmarks/disentangle.py).
CROSS_WEIGHTS = {"means": 1.0, "confusion": 0.1, "grl": 0.1}


def _choice(name: str, value: Any, options: tuple) -> Any:
    if value not in options:
        raise RecipeError(f"{value!r} is not one of {', '.join(map(str, options))}", key=f"method.{name}")
    return value


class PoseAwareADA(Method):
    roles = ROLES

    def __init__(
        self,
        feature_dim: int = 128,
        pose_feature_dim: int = 64,
        norm: Literal["shared", "per_domain"] = "per_domain",
        shared_trunk: bool = True,
        pose_branch: bool = True,
        pose_weight: float = 0.5,
        adaptation: bool = True,
        adversarial: Literal["grl", "alternating"] = "grl",
        adv_weight: float = 0.1,
        adapt_pose_features: bool = True,
        joint_discriminator: bool = False,
        conditional: bool = False,
        entropy_conditioning: bool = False,
        max_lambda: float = 1.0,
        warmup_gamma: float = 10.0,
        target_entropy_weight: float = 0.0,
        cross_adversarial: bool = True,
        cross_mode: Literal["confusion", "grl", "means"] = "means",
        cross_weight: float | None = None,
        cross_lr: float | None = None,
        cross_inner_steps: int = 1,
        cross_hidden: int = 0,
        cross_normalize: bool = False,
        probe_every: int = 100,
        reconstruction: bool = True,
        rec_weight: float = 0.5,
        identity_code: Literal["none", "subject_embedding"] = "subject_embedding",
        identity_dim: int = 16,
        cross_pose: bool = True,
        partner_fraction: float = 0.5,
        rec_size: int = 32,
        adabn: bool = True,
        label_smoothing: float = 0.0,
        adapts: bool = True,
        target_supervised: bool = False,
    ) -> None:
        self.cfg = dict(locals())
        self.cfg.pop("self")
        _choice("norm", norm, ("shared", "per_domain"))
        _choice("adversarial", adversarial, ("grl", "alternating"))
        _choice("cross_mode", cross_mode, ("confusion", "grl", "means"))
        _choice("identity_code", identity_code, ("none", "subject_embedding"))
        if not 0 < partner_fraction <= 1:
            raise RecipeError(f"must be in (0, 1], got {partner_fraction}", key="method.partner_fraction")
        if cross_inner_steps < 1:
            raise RecipeError(f"must be at least 1, got {cross_inner_steps}", key="method.cross_inner_steps")
        if cross_lr is not None and cross_lr <= 0:
            raise RecipeError(f"must be positive (or null), got {cross_lr}", key="method.cross_lr")
        for key in ("cross_hidden", "probe_every"):
            if self.cfg[key] < 0:
                raise RecipeError(f"must not be negative, got {self.cfg[key]}", key=f"method.{key}")
        if rec_size < 8:
            raise RecipeError(f"must be at least 8, got {rec_size}", key="method.rec_size")
        if cross_weight is None:  # measured per mode (docs/method.md): a bounded share, or a classifier's loss
            cross_weight = CROSS_WEIGHTS[cross_mode]
        for key in ("pose_weight", "adv_weight", "rec_weight", "target_entropy_weight"):
            if self.cfg[key] < 0:
                raise RecipeError(f"must not be negative, got {self.cfg[key]}", key=f"method.{key}")
        if conditional and joint_discriminator:
            raise RecipeError("a conditional discriminator conditions f_e on expression predictions; it cannot be joint",
                              key="method.joint_discriminator")
        if cross_weight < 0:
            raise RecipeError(f"must not be negative, got {cross_weight}", key="method.cross_weight")
        self.__dict__.update(self.cfg)
        self.cross_weight = cross_weight
        self.pose_branch = pose_branch
        # Terms that need the pose branch are off without it (the "without pose branch" ablation).
        self.use_adv = adaptation and adv_weight > 0
        self.use_cross = cross_adversarial and pose_branch and cross_weight > 0
        self.use_rec = reconstruction and rec_weight > 0
        self.needs_partners = self.use_rec and cross_pose and pose_branch
        self.adapts = adapts
        self.uses_target_labels = target_supervised
        self.ce = nn.CrossEntropyLoss(ignore_index=-1, label_smoothing=label_smoothing)
        self.dom = DomainAdversarial()
        self.confusion = Confusion()
        self.probe_log: list[dict[str, Any]] = []
        self._last_probe: dict[str, float] = {}

    # -- building ---------------------------------------------------------------
    def build(self, ctx: Any) -> dict[str, nn.Module]:
        c, h, _ = ctx.image_shape
        self.num_classes, self.num_pose_bins = ctx.num_classes, ctx.num_pose_bins
        m: dict[str, nn.Module] = {}
        m["backbone"] = ctx.build("backbone", "convnet", in_channels=c, image_size=h)
        width = m["backbone"].out_features
        m["expression_encoder"] = ctx.build("expression_encoder", "mlp", in_features=width, out_features=self.feature_dim)
        m["expression_classifier"] = ctx.build("expression_classifier", "linear", in_features=self.feature_dim,
                                               num_classes=ctx.num_classes)
        if self.pose_branch:
            pose_width = width
            if not self.shared_trunk:
                m["pose_backbone"] = ctx.build("pose_backbone", "convnet", in_channels=c, image_size=h)
                pose_width = m["pose_backbone"].out_features
            m["pose_encoder"] = ctx.build("pose_encoder", "mlp", in_features=pose_width, out_features=self.pose_feature_dim)
            m["pose_classifier"] = ctx.build("pose_classifier", "linear", in_features=self.pose_feature_dim,
                                             num_classes=ctx.num_pose_bins)
        if self.use_adv:
            if self.joint_discriminator and self.pose_branch:
                m["expression_discriminator"] = ctx.build("expression_discriminator", "mlp",
                                                          in_features=self.feature_dim + self.pose_feature_dim)
            elif self.conditional:
                m["expression_discriminator"] = ctx.build("expression_discriminator", "conditional",
                                                          in_features=self.feature_dim, num_classes=ctx.num_classes)
            else:
                m["expression_discriminator"] = ctx.build("expression_discriminator", "mlp", in_features=self.feature_dim)
            if self.pose_branch and self.adapt_pose_features and not self.joint_discriminator:
                m["pose_discriminator"] = ctx.build("pose_discriminator", "mlp", in_features=self.pose_feature_dim)
            m["grl"] = GradientReversalLayer(self.max_lambda, self.warmup_gamma, max_steps=1, auto_step=False)
        if self.use_cross:
            cross = Component("mlp_classifier", {"hidden": self.cross_hidden}) if self.cross_hidden else "linear"
            m["cross_pose_classifier"] = ctx.build("cross_pose_classifier", cross, in_features=self.feature_dim,
                                                   num_classes=ctx.num_pose_bins)
            m["cross_expression_classifier"] = ctx.build("cross_expression_classifier", cross,
                                                         in_features=self.pose_feature_dim, num_classes=ctx.num_classes)
        if self.use_rec:
            code = self.feature_dim + (self.pose_feature_dim if self.pose_branch else 0)
            if self.identity_code == "subject_embedding":
                # One code per source subject plus one for the target person (a single person).
                m["identity"] = nn.Embedding(ctx.num_subjects + 1, self.identity_dim)
                code += self.identity_dim
            self.target_identity = ctx.num_subjects
            # Reconstructing a downsampled face keeps the decoder cheap; expression and pose
            # survive at 32 px, and the encoders still see full-size images.
            self.rec_size = min(self.rec_size, h)
            m["decoder"] = ctx.build("decoder", "conv", in_features=code, out_channels=c, image_size=self.rec_size)
            self.rec_loss = ctx.build("reconstruction_loss", "l1")
        # Always domain batch norms, so every configuration shares one state layout and any
        # method can start from any other's source model; `shared` only ever uses "source".
        for name in TRUNK:
            if name in m:
                m[name] = convert_to_domain_bn(m[name])
        self.models = m
        return m

    def optimizer_groups(self) -> dict[str, list[str]]:
        names = [n for n in self.models if n != "grl"]
        groups = {"main": [n for n in names if not n.startswith("cross_")]}
        if self.use_cross:  # in both modes the cross classifiers learn in steps of their own
            groups["cross"] = ["cross_pose_classifier", "cross_expression_classifier"]
        if self.use_adv and self.adversarial == "alternating":
            disc = [n for n in ("expression_discriminator", "pose_discriminator") if n in self.models]
            groups["main"] = [n for n in groups["main"] if n not in disc]
            groups["discriminator"] = disc
        return groups

    # -- forward ---------------------------------------------------------------
    def encode(self, images: torch.Tensor, domain_name: str) -> dict[str, torch.Tensor]:
        m = self.models
        trunk = [m[n] for n in TRUNK if n in m]
        with _domains(trunk, domain_name if self.norm == "per_domain" else "source"):
            hidden = m["backbone"](images)
            out = {"expression": m["expression_encoder"](hidden)}
            if self.pose_branch:
                pose_hidden = m["pose_backbone"](images) if "pose_backbone" in m else hidden
                out["pose"] = m["pose_encoder"](pose_hidden)
        return out

    def predict(self, images: torch.Tensor, domain: str = "target") -> torch.Tensor:
        return self.models["expression_classifier"](self.encode(images, domain)["expression"])

    def features(self, images: torch.Tensor, domain: str = "target") -> dict[str, torch.Tensor]:
        return self.encode(images, domain)

    def predict_with_features(self, images: torch.Tensor,
                              domain: str = "target") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feats = self.encode(images, domain)
        return self.models["expression_classifier"](feats["expression"]), feats

    def predict_pose(self, images: torch.Tensor, domain: str = "target") -> torch.Tensor | None:
        if not self.pose_branch:
            return None
        return self.models["pose_classifier"](self.encode(images, domain)["pose"])

    def start_adaptation(self, target_batches: Callable[[], Iterable[torch.Tensor]]) -> None:
        """Give the target its normalization statistics: recomputed on its own images (AdaBN),
        or, without AdaBN, a copy of the source statistics."""
        m = self.models
        modules = nn.ModuleList([m[n] for n in TRUNK if n in m])
        stats_domain = "target" if self.norm == "per_domain" else "source"
        if self.adabn:
            recompute_bn_stats(modules, target_batches(), domain=stats_domain,
                               forward=lambda x: self.encode(x, "target"))
        elif self.norm == "per_domain":
            with torch.no_grad():
                for layer in modules.modules():
                    if isinstance(layer, DomainBatchNorm) and layer.track_running_stats:
                        for src, dst in zip(layer.stats("source"), layer.stats("target")):
                            dst.copy_(src)

    # -- the step --------------------------------------------------------------
    def train_step(self, batch: StepBatch, ctx: Any) -> dict[str, torch.Tensor]:
        src, tgt = batch.source, batch.target
        m = self.models
        terms: dict[str, torch.Tensor] = {}
        if "grl" in m:
            m["grl"].max_steps = ctx.total_steps  # the warm-up spans the adaptation phase
        with ctx.autocast():
            fs = self._encode_all(src, tgt)
        f_s, f_t = fs["source"], fs.get("target")
        if self.use_cross:
            # The cross classifiers catch up with the current features before the encoders try to
            # remove what they read: an encoder step against a lagging classifier is evaded, not won.
            terms_x = self._train_cross_classifiers(f_s, src, ctx)
        with ctx.autocast():
            logits_s = m["expression_classifier"](f_s["expression"])
            terms["expression"] = self.ce(logits_s.float(), src.expression)
            if self.uses_target_labels and f_t is not None and tgt.expression is not None:
                terms["target_expression"] = self.ce(m["expression_classifier"](f_t["expression"]).float(), tgt.expression)
            if self.pose_branch and src.pose_bin is not None and self.pose_weight > 0:
                terms["pose"] = self.pose_weight * self.ce(m["pose_classifier"](f_s["pose"]).float(), src.pose_bin)
            adapting = f_t is not None and self.adapts and not self.uses_target_labels
            if self.use_adv and adapting and self.adversarial == "grl":
                terms["adversarial"] = self.adv_weight * self._adversarial(f_s, f_t, logits_s, reverse=True)
            if adapting and self.target_entropy_weight > 0:
                logits_t = m["expression_classifier"](f_t["expression"])
                terms["target_entropy"] = self.target_entropy_weight * entropy(logits_t).mean()
            if self.use_cross:
                terms["cross"] = self.cross_weight * self._cross_encoder_term(f_s, src)
            if self.use_rec:
                terms["reconstruction"] = self.rec_weight * self._reconstruction(src, fs, tgt)
            if self.use_adv and adapting and self.adversarial == "alternating":
                with _no_param_grad(*[m[n] for n in ("expression_discriminator", "pose_discriminator") if n in m]):
                    terms["adversarial"] = self.adv_weight * self._adversarial(f_s, f_t, logits_s, reverse=False,
                                                                               mode="flipped")
        total = sum(terms.values())
        ctx.update(total, "main", terms)
        if self.use_cross:
            terms["cross_classifiers"] = terms_x
        if self.use_adv and adapting and self.adversarial == "alternating":
            with ctx.autocast():
                detached_s = {k: v.detach() for k, v in f_s.items()}
                detached_t = {k: v.detach() for k, v in f_t.items()}
                disc = self._adversarial(detached_s, detached_t, logits_s.detach(), reverse=False)
            ctx.update(disc, "discriminator", {"discriminator": disc})
            terms["discriminator"] = disc
        if "grl" in m and adapting:
            m["grl"].advance()
        out = {k: v.detach() for k, v in terms.items()}
        out["loss"] = total.detach()
        out.update(self._run_probe(ctx))
        return out

    def _run_probe(self, ctx: Any) -> dict[str, torch.Tensor]:
        """Every ``probe_every`` steps, fresh linear probes on held-out source people (where the
        engine gave a probe); the latest values are returned with every step's losses, so each
        logged step carries them."""
        if self.probe is not None and self.probe_every and (ctx.step + 1) % self.probe_every == 0:
            values = self.probe()
            self.train(True)  # the probe evaluates in eval mode
            self._last_probe = {f"probe_{k}": v for k, v in values.items()}
            self.probe_log.append({"phase": ctx.phase, "step": ctx.step + 1, **values})
        return {k: torch.tensor(v) for k, v in self._last_probe.items()}

    def take_probe_log(self) -> list[dict[str, Any]]:
        log, self.probe_log, self._last_probe = self.probe_log, [], {}
        return log

    def _encode_all(self, src: Batch, tgt: Batch | None) -> dict[str, dict[str, torch.Tensor]]:
        """Features of the source batch, the cross-pose partners used (a fraction of the
        batch) and the target batch, in as few forward passes as normalization allows: one
        over everything with shared statistics, one per domain with per-domain statistics."""
        parts: dict[str, tuple[torch.Tensor, str]] = {"source": (src.images, "source")}
        if self.needs_partners and src.partner is not None:
            k = max(1, int(round(len(src.images) * self.partner_fraction)))
            parts["partner"] = (src.partner.images[:k], "source")
        if tgt is not None:
            parts["target"] = (tgt.images, "target")
        groups = [list(parts)] if self.norm == "shared" else [[n for n in parts if parts[n][1] == d] for d in ("source", "target")]
        out: dict[str, dict[str, torch.Tensor]] = {}
        for names in filter(None, groups):
            images = torch.cat([parts[n][0] for n in names]) if len(names) > 1 else parts[names[0]][0]
            feats = self.encode(images, parts[names[0]][1])
            start = 0
            for n in names:
                size = len(parts[n][0])
                out[n] = {k: v[start:start + size] for k, v in feats.items()}
                start += size
        return out

    def _adversarial(self, f_s: dict, f_t: dict, logits_s: torch.Tensor, reverse: bool,
                     mode: str = "discriminator") -> torch.Tensor:
        """Domain loss of the discriminators on both features. Each discriminator sees the
        concatenated source+target batch once, so its normalization mixes the domains."""
        m = self.models
        n = len(logits_s)

        def judge(disc: nn.Module, xs: torch.Tensor, xt: torch.Tensor, *cond: torch.Tensor,
                  weights: tuple = (None, None)) -> torch.Tensor:
            x = torch.cat([xs, xt])
            x = m["grl"](x) if reverse else x
            out = disc(x, *cond).float()
            return self.dom(out[:n], out[n:], *weights, mode=mode)

        if self.joint_discriminator and self.pose_branch:
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
            loss = loss + judge(m["pose_discriminator"], f_s["pose"], f_t["pose"])
        return loss

    def _cross_input(self, f: torch.Tensor) -> torch.Tensor:
        """What a cross classifier reads: with ``cross_normalize`` each feature standardized over
        the batch (as a linear probe standardizes), so that neither side can win by rescaling a
        direction; the encoders' gradient flows through the statistics too."""
        return F.batch_norm(f, None, None, training=True) if self.cross_normalize else f

    def cross_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.use_cross:
            return {}
        m = self.models
        return {"pose_from_expression": m["cross_pose_classifier"](self._cross_input(features["expression"])),
                "expression_from_pose": m["cross_expression_classifier"](self._cross_input(features["pose"]))}

    def _cross_encoder_term(self, f: dict[str, torch.Tensor], src: Batch) -> torch.Tensor:
        """Encoders learn features from which the other label cannot be read: with ``means`` by
        pulling its class means together, otherwise against the cross classifiers, whose own
        parameters take no gradient here (they learn in their own steps)."""
        if self.cross_mode == "means":
            share = _between_class_share(f["pose"], src.expression, self.num_classes)
            if src.pose_bin is not None:
                share = share + _between_class_share(f["expression"], src.pose_bin, self.num_pose_bins)
            return share
        m = self.models
        xp, xe = m["cross_pose_classifier"], m["cross_expression_classifier"]
        with _no_param_grad(xp, xe):
            if self.cross_mode == "confusion":  # push predictions toward uniform
                return (self.confusion(xp(self._cross_input(f["expression"])).float())
                        + self.confusion(xe(self._cross_input(f["pose"])).float()))
            # grl: the encoders receive the reversed gradient of the classifiers' cross-entropy.
            return self._cross_ce(xp(self._cross_input(grad_reverse(f["expression"]))),
                                  xe(self._cross_input(grad_reverse(f["pose"]))), src)

    def _train_cross_classifiers(self, f: dict[str, torch.Tensor], src: Batch, ctx: Any) -> torch.Tensor:
        """``cross_inner_steps`` updates of the cross classifiers (pose from f_e, expression from
        f_p) on the batch's detached features, at ``cross_lr`` where set. Returns the
        cross-entropy before the first update: the classifiers' loss on features not yet fitted."""
        m = self.models
        xp, xe = m["cross_pose_classifier"], m["cross_expression_classifier"]
        opt = ctx.optimizers.get("cross")
        if self.cross_lr is not None and opt is not None:
            for group in opt.param_groups:  # constant: the recipe's scheduler does not reach it
                group["lr"] = self.cross_lr
        with torch.no_grad():
            fe = self._cross_input(f["expression"].detach().float())
            fp = self._cross_input(f["pose"].detach().float())
        losses = []
        for _ in range(self.cross_inner_steps):
            with ctx.autocast():
                loss = self._cross_ce(xp(fe), xe(fp), src)
            ctx.update(loss, "cross", {"cross_classifiers": loss})
            losses.append(loss.detach())
        return losses[0]

    def _cross_ce(self, pose_logits: torch.Tensor, expression_logits: torch.Tensor, src: Batch) -> torch.Tensor:
        loss = self.ce(expression_logits.float(), src.expression)
        if src.pose_bin is not None:
            loss = loss + self.ce(pose_logits.float(), src.pose_bin)
        return loss

    def _reconstruction(self, src: Batch, fs: dict[str, dict[str, torch.Tensor]], tgt: Batch | None) -> torch.Tensor:
        """L_rec over source, target and cross-pose pairs: a face from its own f_e, f_p and
        identity code; a partner view from f_e of the first view and f_p of the partner (so f_e
        must carry the expression whatever the pose). Each set is decoded in its own pass, so
        the decoder's batch statistics never mix the domains (nor real codes with swapped ones);
        one loss over all of them weighs every image alike."""
        m = self.models
        sets = [(fs["source"]["expression"], fs["source"].get("pose"), src.subject, src.images)]
        if "target" in fs and tgt is not None:
            target_id = torch.full((len(tgt.images),), self.target_identity, device=tgt.images.device, dtype=torch.long)
            sets.append((fs["target"]["expression"], fs["target"].get("pose"), target_id, tgt.images))
        if "partner" in fs and src.partner is not None:
            k = len(fs["partner"]["pose"])
            sets.append((fs["source"]["expression"][:k], fs["partner"]["pose"],
                         src.subject[:k] if src.subject is not None else None, src.partner.images[:k]))
        with_identity = "identity" in m and all(s[2] is not None for s in sets)
        outputs = []
        for expression, pose, subject, _ in sets:
            code = [expression] + ([pose] if self.pose_branch else []) + ([m["identity"](subject)] if with_identity else [])
            outputs.append(m["decoder"](torch.cat(code, 1)).float())
        goal = torch.cat([s[3] for s in sets]).float()
        if goal.shape[-1] != self.rec_size:
            goal = F.interpolate(goal, size=(self.rec_size, self.rec_size), mode="area")
        return self.rec_loss(torch.cat(outputs), goal)


def _between_class_share(f: torch.Tensor, y: torch.Tensor, num_classes: int, eps: float = 1e-3) -> torch.Tensor:
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


class _domains:
    """Activate one normalization domain across several modules."""

    def __init__(self, modules: list[nn.Module], name: str) -> None:
        self.contexts = [domain(mod, name) for mod in modules]

    def __enter__(self) -> None:
        for c in self.contexts:
            c.__enter__()

    def __exit__(self, *exc: Any) -> None:
        for c in reversed(self.contexts):
            c.__exit__(*exc)
