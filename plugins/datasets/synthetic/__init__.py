"""Built-in synthetic expression faces: 3D point-splatted cartoon heads with personal styles.

Registered as the dataset ``synthetic``; see docs/synthetic.md.
"""

from __future__ import annotations

from typing import Any

from facedapt import hookimpl

from .presets import PRESETS, SyntheticPreset
from .source import GENERATOR_VERSION, Rendered, SyntheticFaces


@hookimpl
def facedapt_register_datasets(registry: Any) -> None:
    registry.register("synthetic", SyntheticFaces)


__all__ = ["GENERATOR_VERSION", "PRESETS", "Rendered", "SyntheticFaces", "SyntheticPreset"]
