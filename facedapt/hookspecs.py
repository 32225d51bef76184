"""The hook contract third-party plugins implement (keep it stable).

Registration hooks receive one :class:`facedapt.registry.Registry` per component family;
lifecycle hooks receive the documented :class:`facedapt.engine.run.Run` object.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "facedapt"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Component families, each with its registration hook ``facedapt_register_<family>``.
FAMILIES: tuple[str, ...] = (
    "backbones",
    "heads",
    "discriminators",
    "decoders",
    "losses",
    "methods",
    "datasets",
    "protocols",
    "augmentations",
    "metrics",
)


@hookspec
def facedapt_register_backbones(registry: Any) -> None:
    """Register backbone factories: image tensor -> feature vector modules."""


@hookspec
def facedapt_register_heads(registry: Any) -> None:
    """Register encoders and classifiers that sit on backbone features."""


@hookspec
def facedapt_register_discriminators(registry: Any) -> None:
    """Register domain discriminators."""


@hookspec
def facedapt_register_decoders(registry: Any) -> None:
    """Register decoders that reconstruct images from features."""


@hookspec
def facedapt_register_losses(registry: Any) -> None:
    """Register loss terms."""


@hookspec
def facedapt_register_methods(registry: Any) -> None:
    """Register training methods (forward graph and update rule of one step)."""


@hookspec
def facedapt_register_datasets(registry: Any) -> None:
    """Register dataset sources (factories returning a DatasetSource)."""


@hookspec
def facedapt_register_protocols(registry: Any) -> None:
    """Register protocols that split samples into source, source-val and target domains."""


@hookspec
def facedapt_register_augmentations(registry: Any) -> None:
    """Register on-device batch augmentations."""


@hookspec
def facedapt_register_metrics(registry: Any) -> None:
    """Register evaluation metrics: fn(confusion) -> float, where ``confusion`` is a
    [classes, classes] count matrix (rows: true class, columns: prediction)."""


@hookspec
def facedapt_on_run_start(run: Any) -> None:
    """A run is about to train (models built, run directory created)."""


@hookspec
def facedapt_on_step_end(run: Any, step: int, metrics: dict[str, float]) -> None:
    """Called every ``train.log_every`` steps and at the end of a phase; ``metrics`` holds
    the step's losses as floats plus ``phase``, ``target``, ``step`` and ``skipped``.
    (Not every step: reading losses from a GPU each step would stall it.)"""


@hookspec
def facedapt_on_eval_end(run: Any, results: dict[str, Any]) -> None:
    """An evaluation ended."""


@hookspec
def facedapt_on_run_end(run: Any, results: dict[str, Any]) -> None:
    """A run ended; ``results`` is what results.json holds."""
