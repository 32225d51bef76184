"""Built-in report: report.md, report.html and plots (facedapt.report) written when a run ends.

Switched by the recipe's ``eval.report`` (default true) or ``--report``/``--no-report`` on the
command line, which the engine passes on as ``run.report``. The results are already safe on disk
when this runs, so a report that fails only warns; ``facedapt report RUN_DIR`` rebuilds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loguru import logger

from facedapt import hookimpl


@hookimpl(trylast=True)  # after other run-end hooks, which may add files the report reads
def facedapt_on_run_end(run: Any, results: dict[str, Any]) -> None:
    if getattr(run, "report", False):  # a caller's own run object may not say: no report then
        write_report(run.run_dir)


def write_report(run_dir: Path) -> None:
    """Build the report of a finished run; a failure is one warning, never an error."""
    try:
        from facedapt.report import build_report  # plotting libraries load only when a report is made

        logger.info("report in {}", build_report(run_dir))
    except Exception as exc:  # noqa: BLE001 - never fail a finished run over its report
        logger.warning("report not written ({}: {}); rebuild it with: facedapt report {}", type(exc).__name__, exc,
                       run_dir)
