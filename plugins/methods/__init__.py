"""Built-in training methods: pose-aware ADA and the baselines it is compared with."""

from __future__ import annotations

from facedapt_plugins.methods.baselines import (
    CDAN,
    DANN,
    AdaBN,
    SourceOnly,
    TargetSupervised,
)
from facedapt_plugins.methods.pose_aware import PoseAwareADA
from facedapt_plugins.methods.source_free import Tent

from facedapt import hookimpl


@hookimpl
def facedapt_register_methods(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register("pada", PoseAwareADA)
    registry.register("source_only", SourceOnly)
    registry.register("adabn", AdaBN)
    registry.register("dann", DANN)
    registry.register("cdan", CDAN)
    registry.register("target_supervised", TargetSupervised)
    registry.register("tent", Tent)
