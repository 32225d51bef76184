"""Pose-aware adversarial domain adaptation (a reconstruction of arXiv 2007.05932).

Not TLlib's "Partial Adversarial Domain Adaptation", which shares the acronym PADA.

Networks (roles a recipe may set under ``model:``): a backbone B, expression and pose encoders
E_e and E_p, classifiers C_e and C_p (facedapt_plugins.methods.networks), and the networks of
its terms (facedapt_plugins.methods.terms): domain discriminators D_e and D_p (or one joint),
cross classifiers X_p (pose from f_e) and X_e (expression from f_p), and a decoder G. The
encoder objective is ``L_sup + adv_weight * L_adv + cross_weight * L_cross + rec_weight * L_rec``.
Each strategy is a term, switched on or off here; the baselines (facedapt_plugins.methods.
baselines) compose the same networks with fewer terms, so comparisons differ only in the terms.
"""

from __future__ import annotations

from typing import Literal

from facedapt_plugins.methods.networks import Networks
from facedapt_plugins.methods.terms import (
    CrossTerm,
    DomainAdversarialTerm,
    ReconstructionTerm,
    TargetEntropyTerm,
    Term,
)


class PoseAwareADA(Networks):
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
        pose_conditional: bool = False,
        target_entropy_weight: float = 0.0,
        cross_adversarial: bool = True,
        cross_mode: Literal["confusion", "grl", "means"] = "means",
        cross_weight: float | None = None,
        cross_lr: float | None = None,
        cross_inner_steps: int = 1,
        cross_hidden: int = 0,
        cross_normalize: bool = False,
        cross_target: bool = False,
        probe_every: int = 100,
        reconstruction: bool = True,
        rec_weight: float = 0.5,
        identity_code: Literal["none", "subject_embedding"] = "subject_embedding",
        identity_dim: int = 16,
        cross_pose: bool = True,
        partner_fraction: float = 0.5,
        rec_size: int = 32,
        target_cross_pose: bool = False,
        adabn: bool = True,
        label_smoothing: float = 0.0,
        adapts: bool = True,
        target_supervised: bool = False,
    ) -> None:
        # Every term is made from the recipe (so a bad value fails whatever the switches); those
        # switched on compose the method. Terms that read f_p are off without the pose branch.
        adversarial_term = DomainAdversarialTerm(adv_weight, adversarial, adapt_pose_features, joint_discriminator,
                                                 conditional, entropy_conditioning, max_lambda, warmup_gamma,
                                                 pose_conditional)
        entropy_term = TargetEntropyTerm(target_entropy_weight)
        cross = CrossTerm(cross_mode, cross_weight, cross_lr, cross_inner_steps, cross_hidden, cross_normalize,
                          cross_target)
        rec = ReconstructionTerm(rec_weight, identity_code, identity_dim, cross_pose, partner_fraction, rec_size,
                                 target_cross_pose)
        switched: list[tuple[Term, bool]] = [
            (adversarial_term, adaptation and adv_weight > 0),
            (entropy_term, target_entropy_weight > 0),
            (cross, cross_adversarial and pose_branch and cross.weight > 0),
            (rec, reconstruction and rec_weight > 0),
        ]
        super().__init__([t for t, on in switched if on], feature_dim=feature_dim, pose_feature_dim=pose_feature_dim, norm=norm,
                         shared_trunk=shared_trunk, pose_branch=pose_branch, pose_weight=pose_weight, adabn=adabn,
                         label_smoothing=label_smoothing, adapts=adapts, target_supervised=target_supervised,
                         probe_every=probe_every)
