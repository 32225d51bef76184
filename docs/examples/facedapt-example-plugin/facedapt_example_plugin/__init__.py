"""An example facedapt plugin: one backbone and one lifecycle callback.

- ``example_mlp`` (family ``backbones``): flattens the image and applies a two-layer MLP.
  The engine passes ``in_channels`` and ``image_size``; ``hidden``, ``out_features`` and
  ``dropout`` are recipe options. Like every backbone it exposes ``out_features``.
- A step counter (lifecycle hooks): records how many steps each phase of a run reached and
  writes ``step_counts.json`` into the run directory when the run ends.
"""

from __future__ import annotations

import json
from typing import Any

from torch import nn

from facedapt import hookimpl

__version__ = "0.1.0"

#: The step counts of the last run that ended in this process: phase key -> steps.
LAST_COUNTS: dict[str, int] = {}

_counts: dict[int, dict[str, int]] = {}  # id(run) -> phase key -> steps reached


class ExampleMLP(nn.Module):
    """Image ``[B, C, H, W]`` -> features ``[B, out_features]``: flatten, then MLP."""

    def __init__(self, in_channels: int, image_size: int, hidden: int = 256, out_features: int = 128,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.out_features = out_features
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * image_size * image_size, hidden, bias=False),
            nn.BatchNorm1d(hidden),  # per-domain statistics (AdaBN) work on any BatchNorm layer
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_features),
            nn.ReLU(inplace=True),
        )

    def forward(self, images):  # type: ignore[no-untyped-def]
        return self.net(images)


@hookimpl
def facedapt_register_backbones(registry: Any) -> None:
    registry.register("example_mlp", ExampleMLP)


def _key(metrics: dict[str, Any]) -> str:
    target = metrics.get("target")
    return f"{metrics['phase']}:{target}" if target else str(metrics["phase"])


@hookimpl
def facedapt_on_run_start(run: Any) -> None:
    _counts[id(run)] = {}


@hookimpl
def facedapt_on_step_end(run: Any, step: int, metrics: dict[str, Any]) -> None:
    # Called at logging steps (every train.log_every steps and at the last step of a phase);
    # ``step`` counts from the start of the phase, so the largest value seen is its length.
    counts = _counts.setdefault(id(run), {})
    key = _key(metrics)
    counts[key] = max(counts.get(key, 0), step)


@hookimpl
def facedapt_on_run_end(run: Any, results: dict[str, Any]) -> None:
    counts = _counts.pop(id(run), {})
    LAST_COUNTS.clear()
    LAST_COUNTS.update(counts)
    report = {"total": sum(counts.values()), "phases": counts}
    (run.run_dir / "step_counts.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
