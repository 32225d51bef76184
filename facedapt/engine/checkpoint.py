"""Checkpoints: all state in plain tensors and containers (loads with weights_only=True),
written atomically (temporary file, flush, fsync, rename)."""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from facedapt.errors import CheckpointError, StorageError

FORMAT = 1


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(_flatten_py(random.getstate()))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _flatten_py(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` so that a crash leaves either the old or the new file."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format": FORMAT, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # disk full, read-only file system: a runtime fault, one line
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        kept = "; the previous file is kept" if path.exists() else ""
        raise StorageError(f"{path}: cannot write the checkpoint ({exc.strerror or exc}){kept}") from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the error below says it all, in one line
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint: corrupt, or it holds objects other than tensors and "
                              f"plain data, which are never unpickled ({_unpickler_reason(exc)})") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint{_damage(path, exc)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a facedapt checkpoint (format {state.get('format') if isinstance(state, dict) else '?'})")
    return state


def _damage(path: Path, exc: Exception) -> str:
    """What is wrong with a file torch could not open, in words where the cause is known."""
    with path.open("rb") as fh:
        head = fh.read(4)
    # Checkpoints are zip archives whose directory sits at the end: a start without an end is
    # a file cut short (our own writes are atomic, so a copy or transfer that did not finish).
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return f": the file is cut short at {path.stat().st_size} bytes, as a copy that did not finish leaves it"
    return f" ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"


def _unpickler_reason(exc: Exception) -> str:
    """The specific line of torch's weights-only refusal (its advice to load with
    weights_only=False, which would run the file's code, is left out)."""
    skip = ("Weights only load failed", "Please file an issue", "Check the documentation", "WeightsUnpickler error")
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    return (lines[-1] if lines else type(exc).__name__)[:200]


_STEP = re.compile(r"ckpt-(\d+)\.pt$")


def periodic(directory: Path) -> list[Path]:
    """Periodic checkpoints in ``directory``, oldest first."""
    found = [p for p in directory.glob("ckpt-*.pt") if _STEP.search(p.name)]
    return sorted(found, key=lambda p: int(_STEP.search(p.name).group(1)))  # type: ignore[union-attr]


def prune(directory: Path, keep: int) -> None:
    """Keep the newest ``keep`` periodic checkpoints; also remove temporary files that a
    process killed while saving left behind (``save`` removes its own on any error)."""
    for old in periodic(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    for stale in directory.glob(".ckpt-*.pt.*"):
        stale.unlink(missing_ok=True)
