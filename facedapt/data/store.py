"""The cache: a dataset decodes once into a uint8 image file plus label tensors.

Images are memory-mapped from the cache (``torch.from_file``), so a Multi-PIE-scale set does
not need to fit in RAM and a second run does not decode again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from loguru import logger

from facedapt.data.samples import DatasetSource, Samples
from facedapt.errors import DataError

CACHE_ENV = "FACEDAPT_CACHE"
FORMAT = 1


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facedapt"


def cache_dir_for(source: DatasetSource) -> Path:
    key = hashlib.sha256(f"{FORMAT}:{source.name}:{source.fingerprint()}".encode()).hexdigest()[:20]
    return cache_root() / "datasets" / f"{source.name}-{key}"


def save_samples(samples: Samples, directory: Path) -> None:
    """Write atomically: into a temporary sibling folder, then rename."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory.parent))
    try:
        images = samples.images.contiguous()
        images.numpy().tofile(tmp / "images.u8")
        labels = {k: v.contiguous() for k, v in samples.tensors().items() if k != "images"}
        torch.save(labels, tmp / "labels.pt")
        meta = {
            "format": FORMAT,
            "shape": list(images.shape),
            "subject_ids": list(samples.subject_ids),
            "dataset": samples.dataset,
            "paths": list(samples.paths),
            "problems": samples.problems,
        }
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_samples(directory: Path) -> Samples:
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    shape = tuple(meta["shape"])
    count = 1
    for s in shape:
        count *= s
    images = torch.from_file(str(directory / "images.u8"), shared=False, size=count, dtype=torch.uint8).view(shape)
    labels = torch.load(directory / "labels.pt", weights_only=True)
    return Samples(
        images=images,
        subject_ids=tuple(meta["subject_ids"]),
        dataset=meta["dataset"],
        paths=tuple(meta["paths"]),
        problems=meta["problems"],
        **labels,
    )


def materialize(source: DatasetSource, *, use_cache: bool = True) -> Samples:
    """The dataset's Samples, decoded once and cached under FACEDAPT_CACHE."""
    if not use_cache:
        return _checked(source.load(), source)
    directory = cache_dir_for(source)
    if (directory / "meta.json").is_file():
        try:
            return load_samples(directory)
        except Exception as exc:  # a damaged cache entry is rebuilt, never trusted
            logger.warning("cache entry {} is unreadable ({}); rebuilding", directory, exc)
    logger.info("materializing dataset {} into {}", source.name, directory)
    samples = _checked(source.load(), source)
    try:
        save_samples(samples, directory)
    except OSError as exc:
        logger.warning("could not write the dataset cache {} ({}); continuing in memory", directory, exc.strerror or exc)
        return samples
    return load_samples(directory)


def _checked(samples: Samples, source: DatasetSource) -> Samples:
    if len(samples) == 0:
        raise DataError(f"dataset {source.name!r} has no usable images")
    if samples.images.dtype != torch.uint8 or samples.images.ndim != 4:
        raise DataError(f"dataset {source.name!r} returned images of dtype {samples.images.dtype} and shape "
                        f"{tuple(samples.images.shape)}; expected uint8 [N, C, H, W]")
    return samples
