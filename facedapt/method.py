"""The method contract: what a method plugin's factory returns.

A method owns the forward graph and the update rule of one step; the engine owns data,
optimizers, schedules, precision, checkpoints, evaluation and the protocol loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs
import torch
from torch import nn


@attrs.define
class Batch:
    """A batch already gathered, moved to the device and normalized (float images).

    Label fields are None where they are hidden: a target batch carries only images unless
    the method declares ``uses_target_labels`` (pose only with ``use_target_pose``, landmarks
    only with ``use_target_landmarks``).
    """

    images: torch.Tensor
    expression: torch.Tensor | None = None
    yaw: torch.Tensor | None = None
    pose_bin: torch.Tensor | None = None
    subject: torch.Tensor | None = None
    capture: torch.Tensor | None = None
    landmarks: torch.Tensor | None = None
    partner: Batch | None = None  # same subject and expression at another pose (cross-pose)


@attrs.define
class StepBatch:
    source: Batch
    target: Batch | None = None  # None while training on the source alone


class Method:
    """Base class for method plugins. Subclasses implement ``build`` and ``train_step``."""

    #: Whether per-target adaptation steps run (False: the source model is used as is).
    adapts: bool = True
    #: Whether target batches carry expression labels (only the upper bound may).
    uses_target_labels: bool = False
    #: Whether source batches carry cross-pose partners.
    needs_partners: bool = False
    #: Whether target batches carry them too: another view of the same target capture, drawn
    #: from the adaptation images by their capture grouping (which views were taken together),
    #: never by a label; the partner batch carries no labels.
    needs_target_partners: bool = False

    #: Model role -> component family; the recipe's ``model:`` section may set these roles.
    roles: dict[str, str] = {}

    #: Set by the engine where labelled source images are held out (and ``eval.leakage_probe``):
    #: fits fresh linear probes on their features and returns their accuracies
    #: (facedapt.engine.evaluate.leakage). A method may call it during training to log leakage.
    probe: Callable[[], dict[str, float]] | None = None

    models: dict[str, nn.Module]

    def build(self, ctx: Any) -> dict[str, nn.Module]:
        """Build and return the named models (also kept as ``self.models``).

        ``ctx`` (facedapt.engine.context.BuildContext) has ``num_classes``, ``num_pose_bins``,
        ``num_subjects`` (source subjects; a target subject gets index ``num_subjects``),
        ``image_shape`` (C, H, W), ``model`` (the recipe's role -> component spec) and
        ``build(family, role, default=None, **provided)``, which builds the component the recipe
        names for ``role`` (or ``default``) with engine-known arguments such as ``in_features``.
        """
        raise NotImplementedError

    def optimizer_groups(self) -> dict[str, list[str]]:
        """Optimizer group -> names of the models it updates (one group by default)."""
        return {"main": list(self.models)}

    def trainable_parameters(self, names: list[str], phase: str) -> list[nn.Parameter]:
        """What the optimizer of a group (``optimizer_groups``: these module names) trains in
        ``phase`` ("source" or "adapt"); asked once as each phase starts. By default every
        parameter of the modules that requires a gradient."""
        return [p for n in names for p in self.models[n].parameters() if p.requires_grad]

    def train_step(self, batch: StepBatch, ctx: Any) -> dict[str, torch.Tensor]:
        """One update; returns its losses as detached scalar tensors (the engine reads them
        only at log steps, so a GPU step needs no host sync).

        ``ctx`` (facedapt.engine.context.StepContext) has ``step``, ``progress`` in [0, 1]
        through the phase, ``phase`` ("source" or "adapt"), ``autocast()`` and
        ``update(loss, group="main", terms=None)``: backward, optional clipping and the optimizer
        step of that group, with NaN/Inf checks that name the terms.
        """
        raise NotImplementedError

    def predict(self, images: torch.Tensor, domain: str = "target") -> torch.Tensor:
        """Expression logits for normalized images (``domain`` picks per-domain statistics
        where the method keeps them)."""
        raise NotImplementedError

    def features(self, images: torch.Tensor, domain: str = "target") -> dict[str, torch.Tensor]:
        """Named feature vectors ("expression", and "pose" where the method has one)."""
        raise NotImplementedError

    def predict_with_features(self, images: torch.Tensor,
                              domain: str = "target") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``predict`` and ``features`` together; a method that computes both from one forward
        pass overrides this so that evaluation encodes each image once."""
        return self.predict(images, domain), self.features(images, domain)

    def predict_pose(self, images: torch.Tensor, domain: str = "target") -> torch.Tensor | None:
        """Pose-bin logits (facedapt.data.samples.YAW_BINS) for normalized images, or None for
        a method without a pose branch."""
        return None

    def cross_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits of the method's own cross classifiers, keyed like the leakage probes
        (``pose_from_expression``: pose-bin logits from expression features; ``expression_from_pose``):
        none by default."""
        return {}

    def take_probe_log(self) -> list[dict[str, Any]]:
        """The records of ``probe`` calls made during training since the last take (and forgets them)."""
        return []

    def start_adaptation(self, target_batches: Callable[[], Iterable[torch.Tensor]]) -> None:
        """Called once before adapting to a target; e.g. AdaBN recomputes statistics here."""

    def train(self, mode: bool = True) -> None:
        for m in self.models.values():
            m.train(mode)
