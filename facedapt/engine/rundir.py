"""The run directory: its layout, how its files are written, and what resuming checks.

Layout::

    <run_dir>/recipe.yaml        the resolved recipe: running it again reproduces the run
    <run_dir>/environment.json   python, torch and plugin distribution versions
    <run_dir>/log.txt, metrics.jsonl per phase, results.json
    <run_dir>/report.md, report.html, report/*.png   built from the files above (facedapt.report)
    <run_dir>/source/            source model (model.pt), periodic ckpt-*.pt
    <run_dir>/subjects/<id>/     per target: model.pt, results.json (its done marker), ckpt-*.pt,
                                 features.pt (2-D projection of expression features, for the report)

``<id>`` is the subject id in a file-system-safe form (:func:`safe_name`).
"""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml

import facedapt
from facedapt.engine import checkpoint
from facedapt.errors import CheckpointError, StorageError, UsageError
from facedapt.plugin_manager import Plugins
from facedapt.recipe.load import LoadedRecipe, write_resolved


def safe_name(sid: str) -> str:
    """A subject id as a folder name: characters other than letters, digits, ``-_.`` become ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in sid)


def subject_dir(run_dir: Path, sid: str) -> Path:
    return run_dir / "subjects" / safe_name(sid)


def versions(plugins: Plugins) -> dict[str, str]:
    """What environment.json and every checkpoint record about the software."""
    return {"python": platform.python_version(), "torch": str(torch.__version__), "facedapt": facedapt.__version__,
            **{f"plugin:{k}": v for k, v in plugins.distributions().items()}}


def default_run_dir(name: str) -> Path:
    return Path("runs") / name / datetime.now().strftime("%Y%m%d-%H%M%S")


def newest_run_dir(name: str) -> Path:
    base = Path("runs") / name
    found = sorted(p for p in base.glob("*") if (p / "recipe.yaml").is_file()) if base.is_dir() else []
    if not found:
        raise UsageError(f"--resume: no earlier run of recipe {name!r} under {base} (give --run-dir)")
    return found[-1]


def check_new(run_dir: Path) -> None:
    if (run_dir / "recipe.yaml").exists():
        raise UsageError(f"{run_dir}: already holds a run (use --resume to continue it, or another --run-dir)")


def check_resume(run_dir: Path, loaded: LoadedRecipe, allow_changed: bool) -> None:
    """Refuse to resume a run whose recipe changed, unless ``allow_changed``."""
    old_file = run_dir / "recipe.yaml"
    if not old_file.is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no recipe.yaml) to resume")
    old = yaml.safe_load(old_file.read_text(encoding="utf-8")) or {}
    changes = recipe_changes(old, loaded.resolved)
    if changes and not allow_changed:
        more = f"; and {len(changes) - 6} more" if len(changes) > 6 else ""
        raise UsageError(f"{old_file}: the recipe changed since this run started ({'; '.join(changes[:6])}{more}); "
                         "resume with --allow-changed-recipe to continue anyway")


def recipe_changes(a: Any, b: Any, key: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two resolved recipes."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += recipe_changes(a.get(k, "<unset>"), b.get(k, "<unset>"), f"{key}.{k}" if key else str(k))
        return out
    return [] if a == b else [f"{key}: {a!r} -> {b!r}"]


def create(run_dir: Path, loaded: LoadedRecipe, environment: dict[str, Any]) -> None:
    """Make the run directory (checking that it is writable), recipe.yaml unless resuming, and
    environment.json."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{run_dir}: cannot write the run directory ({exc.strerror or exc})") from None
    if not (run_dir / "recipe.yaml").exists():
        write_resolved(loaded, run_dir / "recipe.yaml")
    write_json(run_dir / "environment.json", environment)


def write_json(path: Path, data: dict) -> None:
    """Atomically (temporary file, rename): a reader sees the old file or the new one, never half."""
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=float), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # disk full: one line, the previous file left as it was
        tmp.unlink(missing_ok=True)
        raise StorageError(f"{path}: cannot write ({exc.strerror or exc})") from exc


class LogFile:
    """The run's log.txt as a loguru sink that fails like the other run files: a full disk is a
    StorageError naming the file (loguru's own file sink would print a traceback and go on)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = path.open("a", encoding="utf-8")

    def write(self, message: str) -> None:
        try:
            self._fh.write(message)
            self._fh.flush()
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc

    def stop(self) -> None:  # loguru calls it when the sink is removed
        try:
            self._fh.close()
        except OSError:  # its last flush failed: already reported by write()
            pass


def find_model_file(path: Path) -> Path:
    """``path`` itself if a file; else its model.pt (a subject or personalized directory), else
    source/model.pt (a run directory: its source model)."""
    if path.is_dir():
        candidates = [path / "model.pt", path / "source" / "model.pt"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise CheckpointError(f"{path}: no model.pt here or in source/")
        return found
    return path


def load_models_file(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A model file from a run directory (its source model) or a model/checkpoint path."""
    return checkpoint.load(find_model_file(path), map_location=device)
