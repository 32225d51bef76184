"""Built-in lifecycle callbacks: progress lines in the log."""

from __future__ import annotations

import sys
import time
from typing import Any

from loguru import logger

from facedapt import hookimpl

_started: dict[int, float] = {}


@hookimpl
def facedapt_on_run_start(run: Any) -> None:
    _started[id(run)] = time.perf_counter()


@hookimpl
def facedapt_on_step_end(run: Any, step: int, metrics: dict[str, Any]) -> None:
    losses = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    where = f"{metrics['phase']}" + (f" {metrics['target']}" if metrics.get("target") else "")
    elapsed = time.perf_counter() - _started.get(id(run), time.perf_counter())
    # On a terminal the progress line shows these; log lines are for files and pipes.
    level = "DEBUG" if sys.stderr.isatty() else "INFO"
    logger.log(level, "{} step {} {} ({:.0f}s)", where, step, losses, elapsed)


@hookimpl
def facedapt_on_run_end(run: Any, results: dict[str, Any]) -> None:
    _started.pop(id(run), None)
