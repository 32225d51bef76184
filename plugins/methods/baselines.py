"""Baselines as compositions of the same networks (facedapt_plugins.methods.networks) with
fewer terms, so a comparison changes only the terms that are switched on (same backbone,
encoders and classifier).

The baselines that adapt default to the full method's normalization (``norm: per_domain``,
``adabn: true``): with shared statistics the target batches of every adaptation step would
drag the running statistics toward the target (an unlabelled, partial AdaBN), and a
comparison would mix that effect with the adaptation terms'."""

from __future__ import annotations

from typing import Literal

from facedapt_plugins.methods.networks import Networks
from facedapt_plugins.methods.terms import DomainAdversarialTerm


class SourceOnly(Networks):
    """Trained on the labelled source only; used on the target as it is."""

    def __init__(self, feature_dim: int = 128, label_smoothing: float = 0.0) -> None:
        super().__init__([], feature_dim=feature_dim, norm="shared", pose_branch=False, adabn=False, adapts=False,
                         label_smoothing=label_smoothing)


class AdaBN(Networks):
    """The source-only model with normalization statistics recomputed on the target subject's
    images; no training on the target."""

    def __init__(self, feature_dim: int = 128, label_smoothing: float = 0.0) -> None:
        super().__init__([], feature_dim=feature_dim, norm="per_domain", pose_branch=False, adabn=True, adapts=False,
                         label_smoothing=label_smoothing)


class DANN(Networks):
    """Domain-adversarial training on the expression features alone (gradient reversal)."""

    def __init__(self, feature_dim: int = 128, norm: Literal["shared", "per_domain"] = "per_domain",
                 adversarial: Literal["grl", "alternating"] = "grl", adv_weight: float = 1.0, max_lambda: float = 1.0,
                 warmup_gamma: float = 10.0, adabn: bool = True, label_smoothing: float = 0.0) -> None:
        term = DomainAdversarialTerm(adv_weight, adversarial, max_lambda=max_lambda, warmup_gamma=warmup_gamma)
        super().__init__([term] if adv_weight > 0 else [], feature_dim=feature_dim, norm=norm, pose_branch=False,
                         adabn=adabn, label_smoothing=label_smoothing)


class CDAN(Networks):
    """Conditional adversarial adaptation: the discriminator sees f_e with the classifier's
    predictions (multilinear map); optional entropy conditioning (CDAN+E)."""

    def __init__(self, feature_dim: int = 128, norm: Literal["shared", "per_domain"] = "per_domain",
                 entropy_conditioning: bool = True, adv_weight: float = 1.0, max_lambda: float = 1.0,
                 warmup_gamma: float = 10.0, adabn: bool = True, label_smoothing: float = 0.0) -> None:
        term = DomainAdversarialTerm(adv_weight, conditional=True, entropy_conditioning=entropy_conditioning,
                                     max_lambda=max_lambda, warmup_gamma=warmup_gamma)
        super().__init__([term] if adv_weight > 0 else [], feature_dim=feature_dim, norm=norm, pose_branch=False,
                         adabn=adabn, label_smoothing=label_smoothing)


class TargetSupervised(Networks):
    """The upper bound: fine-tuned with the target subject's labels. Not an adaptation method;
    use it with data.target_holdout > 0 so it is measured on images it did not train on."""

    def __init__(self, feature_dim: int = 128, norm: Literal["shared", "per_domain"] = "per_domain",
                 label_smoothing: float = 0.0) -> None:
        super().__init__([], feature_dim=feature_dim, norm=norm, pose_branch=False, adabn=norm == "per_domain",
                         target_supervised=True, label_smoothing=label_smoothing)
