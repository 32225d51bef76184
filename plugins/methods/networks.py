"""The networks every built-in method shares, and the step that sums a list of terms.

Networks: a backbone B, an expression encoder E_e and classifier C_e, and with ``pose_branch``
a pose encoder E_p (on B, or on a backbone of its own without ``shared_trunk``) and classifier
C_p. Their normalization is per domain (source, target) with ``norm: per_domain``, else the
source statistics serve both. The encoder objective is the supervised loss (expression, and
``pose_weight`` times the pose loss; with ``target_supervised`` the target's expression loss
too) plus the terms' losses (facedapt_plugins.methods.terms). Methods are compositions: DANN
is these networks with a domain-adversarial term, pose-aware ADA adds the pose branch, cross
and reconstruction terms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
from facedapt_plugins.layers import DomainBatchNorm, convert_to_domain_bn, domain, recompute_bn_stats
from facedapt_plugins.methods.terms import CrossTerm, StepState, Term, choice, non_negative
from torch import nn

from facedapt.method import Batch, Method, StepBatch

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


class Networks(Method):
    roles = ROLES

    def __init__(
        self,
        terms: Sequence[Term] = (),
        feature_dim: int = 128,
        pose_feature_dim: int = 64,
        norm: Literal["shared", "per_domain"] = "per_domain",
        shared_trunk: bool = True,
        pose_branch: bool = True,
        pose_weight: float = 0.5,
        adabn: bool = True,
        label_smoothing: float = 0.0,
        adapts: bool = True,
        target_supervised: bool = False,
        probe_every: int = 100,
    ) -> None:
        choice("norm", norm, ("shared", "per_domain"))
        non_negative(pose_weight=pose_weight, probe_every=probe_every)
        self.terms = list(terms)
        self.feature_dim, self.pose_feature_dim, self.norm = feature_dim, pose_feature_dim, norm
        self.shared_trunk, self.pose_branch, self.pose_weight = shared_trunk, pose_branch, pose_weight
        self.adabn, self.adapts, self.probe_every = adabn, adapts, probe_every
        self.uses_target_labels = target_supervised
        self.ce = nn.CrossEntropyLoss(ignore_index=-1, label_smoothing=label_smoothing)
        self.probe_log: list[dict[str, Any]] = []
        self._last_probe: dict[str, float] = {}

    def term(self, kind: type[Term]) -> Term | None:
        """The method's term of that kind, if it has one."""
        return next((t for t in self.terms if isinstance(t, kind)), None)

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
        for term in self.terms:
            m.update(term.build(self, ctx))
        self.partner_fraction = max((t.partner_fraction for t in self.terms), default=0.0)
        self.needs_partners = self.partner_fraction > 0
        self.needs_target_partners = self.needs_partners and any(t.target_partners for t in self.terms)
        # Always domain batch norms, so every configuration shares one state layout and any
        # method can start from any other's source model; `shared` only ever uses "source".
        for name in TRUNK:
            if name in m:
                m[name] = convert_to_domain_bn(m[name])
        self.models = m
        return m

    def optimizer_groups(self) -> dict[str, list[str]]:
        own: dict[str, list[str]] = {}
        for term in self.terms:
            own.update(term.optimizer_groups(self.models))
        claimed = {n for names in own.values() for n in names}
        main = [n for n in self.models if n != "grl" and n not in claimed]
        return {"main": main, **own}

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

    def cross_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cross = self.term(CrossTerm)
        return cross.logits(self, features) if isinstance(cross, CrossTerm) else {}

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
        with ctx.autocast():
            fs = self.encode_all(src, tgt)
        logged: dict[str, torch.Tensor] = {}
        for term in self.terms:
            logged.update(term.before(self, src, fs, ctx))
        terms: dict[str, torch.Tensor] = {}
        f_s, f_t = fs["source"], fs.get("target")
        with ctx.autocast():
            logits_s = m["expression_classifier"](f_s["expression"])
            terms["expression"] = self.ce(logits_s.float(), src.expression)
            if self.uses_target_labels and f_t is not None and tgt.expression is not None:
                terms["target_expression"] = self.ce(m["expression_classifier"](f_t["expression"]).float(), tgt.expression)
            if self.pose_branch and src.pose_bin is not None and self.pose_weight > 0:
                terms["pose"] = self.pose_weight * self.ce(m["pose_classifier"](f_s["pose"]).float(), src.pose_bin)
            state = StepState(src, tgt, fs, logits_s, f_t is not None and self.adapts and not self.uses_target_labels)
            for term in self.terms:
                terms.update(term.losses(self, state))
        total = sum(terms.values())
        ctx.update(total, "main", terms)
        terms.update(logged)
        for term in self.terms:
            terms.update(term.after(self, state, ctx))
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

    def encode_all(self, src: Batch, tgt: Batch | None) -> dict[str, dict[str, torch.Tensor]]:
        """Features of the source batch, the cross-pose partners used (a fraction of the
        batch), the target batch and its partners where used, in as few forward passes as
        normalization allows: one over everything with shared statistics, one per domain with
        per-domain statistics."""
        def share(batch: Batch) -> torch.Tensor:  # the partners used: a fraction of the batch
            assert batch.partner is not None
            return batch.partner.images[:max(1, int(round(len(batch.images) * self.partner_fraction)))]

        parts: dict[str, tuple[torch.Tensor, str]] = {"source": (src.images, "source")}
        if self.needs_partners and src.partner is not None:
            parts["partner"] = (share(src), "source")
        if tgt is not None:
            parts["target"] = (tgt.images, "target")
            if self.needs_target_partners and tgt.partner is not None:
                parts["target_partner"] = (share(tgt), "target")
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
