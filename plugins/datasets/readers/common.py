"""What every reader shares: option checks, file listing, fingerprints, decoding, assembly.

A reader only parses labels into :class:`Record` objects (no decoding); :class:`Reader.load`
decodes them here, once, the same way for every dataset.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import torch
from loguru import logger

from facedapt.data.imageio import BadImage, Fit, ImageSource, decode  # noqa: F401
from facedapt.data.samples import EXPRESSIONS, Samples
from facedapt.errors import DataError, UsageError

#: Bump when parsing changes what a reader returns, so cached loads are not reused.
READER_FORMAT = 1

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".gif", ".webp"})
# Files the official archives and desktop tools leave around; never worth a problem entry.
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
BAD_DATA_MODES = ("fail", "skip")
DECODE_CHUNK = 2048


# --------------------------------------------------------------------------- files


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_files(root: Path, *, images_only: bool = False) -> list[Path]:
    """Every file under ``root`` (or ``root`` itself if it is a file), sorted, hidden ones skipped."""
    if root.is_file():
        return [root]
    out: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.lower() in IGNORED_NAMES:
                continue
            path = Path(folder) / name
            if not images_only or is_image(path):
                out.append(path)
    return out


def fingerprint_of(dataset: str, root: Path, options: Mapping[str, Any], files: Iterable[Path]) -> str:
    """Hash of the reader, its options and each file's relative path, size and mtime (no reads)."""
    h = hashlib.sha256()
    base = root if root.is_dir() else root.parent
    h.update(json.dumps({"reader": dataset, "format": READER_FORMAT, "root": str(root.resolve()),
                         "options": options}, sort_keys=True, default=str).encode())
    for path in files:
        try:
            st = path.stat()
            entry = f"{_rel(path, base)}\0{st.st_size}\0{st.st_mtime_ns}\n"
        except OSError:
            entry = f"{_rel(path, base)}\0missing\n"
        h.update(entry.encode())
    return h.hexdigest()


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- labels


def expression_table(dataset: str, native: Mapping[str, str | None], overrides: Mapping[str, str | None] | None,
                     *, open_keys: bool = False) -> dict[str, int | None]:
    """Native label -> canonical index, or None to drop; ``overrides`` (the ``expression_map``
    option) replaces entries, e.g. ``{"squint": "disgust"}`` or ``{"contempt": None}``."""
    table = dict(native)
    for key, value in (overrides or {}).items():
        if not open_keys and key not in native:
            raise UsageError(f"{dataset}: expression_map key {key!r} is not a {dataset} label; "
                             f"labels: {', '.join(native)}")
        if value is not None and value not in EXPRESSIONS:
            raise UsageError(f"{dataset}: expression_map[{key!r}] = {value!r} is not a canonical expression; "
                             f"canonical: {', '.join(EXPRESSIONS)}")
        table[key] = value
    return {k: (None if v is None else EXPRESSIONS.index(v)) for k, v in table.items()}


def parse_float(text: str | float | int | None) -> float:
    """Optional number from a CSV cell or JSON value; empty means unknown (NaN)."""
    if text is None:
        return math.nan
    if isinstance(text, (int, float)):
        return float(text)
    text = text.strip()
    return float(text) if text else math.nan


@attrs.define
class Record:
    """One image's labels before decoding. ``key`` detects duplicates (default: the path)."""

    path: str
    source: ImageSource
    subject: str
    expression: int = -1
    yaw: float = math.nan
    pitch: float = math.nan
    capture: str | None = None
    intensity: float = math.nan
    landmarks: np.ndarray | list | None = None  # [[x, y], ...] in source pixel coordinates
    key: str | None = None


class Reporter:
    """Collects problems. Under ``fail`` a problem that would lose data raises at once."""

    def __init__(self, dataset: str, mode: str) -> None:
        self.dataset, self.mode = dataset, mode
        self.problems: list[dict] = []
        self.dropped: Counter[str] = Counter()

    def bad(self, path: str | Path, problem: str) -> None:
        """Bad image or bad label: fatal under ``fail``; skipped and listed under ``skip``."""
        if self.mode == "fail":
            raise DataError(f"{path}: {problem}")
        self.problems.append({"path": str(path), "problem": problem})

    def note(self, path: str | Path, problem: str) -> None:
        """Something odd that loses no labelled image (stray file, empty folder): listed only."""
        self.problems.append({"path": str(path), "problem": problem})

    def drop(self, label: str) -> None:
        """An image whose native class maps to nothing (e.g. Multi-PIE squint)."""
        self.dropped[label] += 1

    def finish(self) -> None:
        if self.dropped:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items()))
            logger.info(f"{self.dataset}: dropped {sum(self.dropped.values())} images of classes outside "
                        f"the canonical vocabulary ({counts}); map them with expression_map")
        if self.problems:
            logger.warning(f"{self.dataset}: {len(self.problems)} problem(s), first: "
                           f"{self.problems[0]['path']}: {self.problems[0]['problem']}")


# --------------------------------------------------------------------------- the reader base


def _to_path(value: str | os.PathLike) -> Path:
    return Path(value).expanduser()


def _check_mode(_inst: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in BAD_DATA_MODES:
        raise UsageError(f"{attribute.name} must be one of {', '.join(BAD_DATA_MODES)}, not {value!r}")


def _check_size(_inst: Any, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise UsageError(f"{attribute.name} must be a positive integer, not {value!r}")


def _check_channels(_inst: Any, attribute: attrs.Attribute, value: int) -> None:
    if value not in (1, 3):
        raise UsageError(f"{attribute.name} must be 1 (grayscale) or 3 (RGB), not {value!r}")


@attrs.define(slots=False)  # subclasses cache derived tables on the instance
class Reader:
    """Base of every reader (a DatasetSource). Subclasses set ``name`` and ``layout`` and
    implement :meth:`records`; they may narrow :meth:`fingerprint_files`."""

    name: ClassVar[str] = "reader"
    layout: ClassVar[str] = ""  # the expected layout, for the "no images" message

    root: Path = attrs.field(converter=_to_path)
    image_size: int = attrs.field(default=64, validator=_check_size)
    channels: int = attrs.field(default=3, validator=_check_channels)
    on_bad_image: str = attrs.field(default="fail", validator=_check_mode)
    # Native label -> canonical name (or None to drop), on top of the reader's own table;
    # readers of unlabelled data ignore it.
    expression_map: dict[str, str | None] | None = attrs.field(default=None, kw_only=True)

    # -- to implement
    def records(self, report: Reporter) -> list[Record]:
        raise NotImplementedError

    def fingerprint_files(self) -> list[Path]:
        return list_files(self.root)

    # -- DatasetSource
    def options(self) -> dict[str, Any]:
        return attrs.asdict(self, filter=lambda a, _v: a.name != "root",
                            value_serializer=lambda _i, _a, v: str(v) if isinstance(v, Path) else v)

    def fingerprint(self) -> str:
        self.require_root()
        return fingerprint_of(self.name, self.root, self.options(), self.fingerprint_files())

    def load(self) -> Samples:
        self.require_root()
        report = Reporter(self.name, self.on_bad_image)
        records = dedupe(self.records(report), report)
        if not records:
            expected = f" (expected {self.layout})" if self.layout else ""
            first = report.problems[0] if report.problems else None
            hint = f"; first problem: {first['path']}: {first['problem']}" if first else ""
            raise DataError(f"{self.root}: no {self.name} images found{expected}{hint}")
        samples = assemble(self.name, records, self.image_size, self.channels, report)
        report.finish()
        return samples

    def require_root(self) -> None:
        if not self.root.exists():
            raise DataError(f"{self.name} root not found: {self.root}")

    def require(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise DataError(f"{path}: {what} not found (expected {self.layout or 'the official layout'})")
        return path


def dedupe(records: list[Record], report: Reporter) -> list[Record]:
    """Keep the first of records sharing a key (e.g. KDEF ``AF01ANS.JPG`` and ``AF01ANS.jpg``)."""
    seen: dict[str, str] = {}
    out = []
    for r in records:
        key = r.key if r.key is not None else r.path
        if key in seen:
            report.bad(r.path, f"duplicate of {seen[key]}")
            continue
        seen[key] = r.path
        out.append(r)
    return out


def assemble(dataset: str, records: list[Record], size: int, channels: int, report: Reporter) -> Samples:
    """Decode every record and build the Samples; bad images go through ``report``."""
    buffer = np.empty((len(records), channels, size, size), dtype=np.uint8)  # no second copy at the end
    kept: list[Record] = []
    landmarks: list[np.ndarray | None] = []
    if len(records) > 1000:
        logger.info(f"{dataset}: decoding {len(records)} images")
    for r, result in zip(records, _decode_all(records, size, channels)):
        if isinstance(result, BadImage):
            report.bad(r.path, str(result))  # in record order, so "fail" names the first bad file
            continue
        arr, fit = result
        buffer[len(kept)] = arr
        kept.append(r)
        landmarks.append(None if r.landmarks is None else fit.apply(np.asarray(r.landmarks, dtype=np.float64)))
    if not kept:
        first = report.problems[0] if report.problems else {"path": "?", "problem": "?"}
        raise DataError(f"{dataset}: none of the {len(records)} images could be read; "
                        f"first problem: {first['path']}: {first['problem']}")
    images = buffer if len(kept) == len(records) else buffer[: len(kept)].copy()

    subject_ids = tuple(sorted({r.subject for r in kept}))
    subject_index = {s: i for i, s in enumerate(subject_ids)}
    capture_keys = sorted({r.capture for r in kept if r.capture is not None}, key=_natural)
    capture_index = {c: i for i, c in enumerate(capture_keys)}
    return Samples(
        images=torch.from_numpy(images),
        expression=torch.tensor([r.expression for r in kept], dtype=torch.int64),
        subject=torch.tensor([subject_index[r.subject] for r in kept], dtype=torch.int64),
        subject_ids=subject_ids,
        dataset=dataset,
        yaw=torch.tensor([r.yaw for r in kept], dtype=torch.float32),
        pitch=torch.tensor([r.pitch for r in kept], dtype=torch.float32),
        capture=torch.tensor([-1 if r.capture is None else capture_index[r.capture] for r in kept], dtype=torch.int64),
        intensity=torch.tensor([r.intensity for r in kept], dtype=torch.float32),
        landmarks=_stack_landmarks(dataset, kept, landmarks),
        paths=tuple(r.path for r in kept),
        problems=report.problems,
    )


def _decode_all(records: list[Record], size: int, channels: int) -> Iterator[tuple[np.ndarray, Fit] | BadImage]:
    """Decode in threads (Pillow releases the GIL while decoding and resizing), in order,
    a chunk at a time so a large dataset does not queue a future per image."""

    def one(r: Record) -> tuple[np.ndarray, Fit] | BadImage:
        try:
            return decode(r.source, size, channels)
        except BadImage as exc:
            return exc

    workers = min(8, os.cpu_count() or 1)
    if workers == 1 or len(records) < 64:
        yield from map(one, records)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(records), DECODE_CHUNK):
            yield from pool.map(one, records[start:start + DECODE_CHUNK])


def _stack_landmarks(dataset: str, kept: list[Record], points: list[np.ndarray | None]) -> torch.Tensor | None:
    shapes = [(r, p.shape) for r, p in zip(kept, points) if p is not None]
    if not shapes:
        return None
    first = shapes[0][1]
    for r, shape in shapes:
        if len(shape) != 2 or shape[1] != 2 or shape != first:
            raise DataError(f"{r.path}: landmarks of shape {list(shape)}; {dataset} needs [K, 2] with one K "
                            f"for every image (first image has {list(first)})")
    k = first[0]
    out = np.full((len(points), k, 2), np.nan, dtype=np.float32)
    for i, p in enumerate(points):
        if p is not None:
            out[i] = p
    return torch.from_numpy(out)


def _natural(key: str) -> tuple:
    """Sort numeric keys by value, so capture ids written as integers read back unchanged."""
    return (0, int(key), "") if re.fullmatch(r"-?\d+", key) else (1, 0, key)
