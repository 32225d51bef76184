"""A generic manifest: CSV or JSONL (``.jsonl``/``.ndjson``; anything else is CSV), one row per image.

Columns: ``path`` (relative to the manifest's folder; required), ``expression`` (canonical
name or integer index; empty = unlabelled), ``subject``, ``yaw``, ``pitch``, ``split``,
``landmarks`` (JSON list of [x, y] in the file's pixels), and optionally ``capture`` and
``intensity`` (0..1), which facedapt.data.export writes too.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from facedapt_plugins.datasets.readers.common import (
    Reader,
    Record,
    Reporter,
    expression_table,
    parse_float,
)

from facedapt.data.samples import EXPRESSIONS
from facedapt.errors import DataError

NATIVE: dict[str, str | None] = {name: name for name in EXPRESSIONS}
DEFAULT_FILE = "manifest.csv"


def manifest_path(root: Path, path: str | None) -> Path:
    """``root`` may be the manifest itself, or a folder holding ``path`` (relative or absolute)."""
    if root.is_file():
        return root
    return root / (path or DEFAULT_FILE)


def read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) for every data row; ``where`` is ``file:line`` for messages."""
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    rows: list[tuple[str, dict[str, Any]]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: not a JSON object")
            rows.append((f"{path}:{number}", row))
    else:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                rows.append((f"{path}:{reader.line_num}", row))
    if rows and not all("path" in row for _, row in rows):
        raise DataError(f"{path}: the 'path' column is required")
    return rows


def parse_expression(value: Any, table: dict[str, int | None]) -> int | None | str:
    """Canonical index, -1 for empty, None to drop, or an error message (str)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return -1
    if isinstance(value, bool):
        return f"expression {value!r} is not a name or an index"
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        index = int(value)
        if index == -1:
            return -1
        if not 0 <= index < len(EXPRESSIONS):
            return f"expression index {index} is out of range (0..{len(EXPRESSIONS) - 1})"
        return index
    name = str(value).strip()
    if name not in table:
        return f"unknown expression {name!r}; canonical names: {', '.join(EXPRESSIONS)}"
    return table[name]


def parse_landmarks(value: Any) -> np.ndarray | None | str:
    """[K, 2] float array, None for an empty cell, or an error message (str)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        points = np.asarray(json.loads(value) if isinstance(value, str) else value, dtype=np.float64)
    except (ValueError, TypeError):
        points = np.empty(0)
    if points.ndim != 2 or points.shape[1] != 2 or not len(points) or not np.isfinite(points).all():
        return "landmarks must be a JSON list of [x, y] pairs"
    return points


def row_record(where: str, row: dict[str, Any], base: Path, table: dict[str, int | None],
               report: Reporter) -> Record | None:
    """One manifest row as a Record; label problems go through ``report`` (None: skipped)."""
    rel = str(row.get("path") or "").strip()
    if not rel:
        report.bad(where, "empty path")
        return None
    expression = parse_expression(row.get("expression"), table)
    if isinstance(expression, str):
        report.bad(where, expression)
        return None
    if expression is None:
        report.drop(str(row.get("expression")).strip())
        return None
    landmarks = parse_landmarks(row.get("landmarks"))
    if isinstance(landmarks, str):
        report.bad(where, landmarks)
        return None
    values: dict[str, float] = {}
    for key in ("yaw", "pitch", "intensity"):
        try:
            values[key] = parse_float(row.get(key))
        except (ValueError, TypeError):
            report.bad(where, f"{key} {row.get(key)!r} is not a number")
            return None
    file = (base / rel) if not Path(rel).is_absolute() else Path(rel)
    subject = str(row.get("subject") if row.get("subject") is not None else "").strip() or "unknown"
    capture = str(row.get("capture") if row.get("capture") is not None else "").strip() or None
    return Record(path=str(file), source=file, subject=subject, expression=expression, yaw=values["yaw"],
                  pitch=values["pitch"], intensity=values["intensity"], capture=capture, landmarks=landmarks,
                  key=os.path.normpath(os.path.abspath(file)))  # no disk access per row


@attrs.define
class Manifest(Reader):
    """Images listed in a CSV/JSONL manifest; ``root`` is its folder (or the file itself)."""

    name = "manifest"
    layout = "a manifest.csv or .jsonl with a path column"

    path: str | None = attrs.field(default=None, kw_only=True)  # default: ROOT/manifest.csv
    split: str | list[str] | None = attrs.field(default=None, kw_only=True)  # keep only these splits

    def __attrs_post_init__(self) -> None:
        self._table = expression_table(self.name, NATIVE, self.expression_map, open_keys=True)

    @property
    def manifest(self) -> Path:
        return manifest_path(self.root, self.path)

    def fingerprint_files(self) -> list[Path]:
        try:
            base = self.manifest.parent
            listed = [base / str(row.get("path") or "") for _, row in read_rows(self.manifest)]
        except DataError:
            listed = []
        return [self.manifest, *listed]

    def records(self, report: Reporter) -> list[Record]:
        manifest = self.manifest
        splits = {self.split} if isinstance(self.split, str) else set(self.split or ())
        out: list[Record] = []
        for where, row in read_rows(manifest):
            if splits and str(row.get("split") or "").strip() not in splits:
                continue
            record = row_record(where, row, manifest.parent, self._table, report)
            if record is not None:
                out.append(record)
        return out
