"""Built-in protocols: personalized targets (optionally under a pose shift), leave-one-subject-out
folds, cross-dataset."""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
from loguru import logger

from facedapt import hookimpl
from facedapt.data.samples import Samples
from facedapt.data.splits import (
    Domain,
    SplitRequest,
    Target,
    labelled,
    select_subjects,
    split_holdout,
)
from facedapt.errors import DataError, RecipeError


def _subject_mask(samples: Samples, ids: list[str]) -> torch.Tensor:
    wanted = torch.tensor([samples.subject_ids.index(i) for i in ids], dtype=torch.int64)
    return torch.isin(samples.subject, wanted)


def _source_domains(samples: Samples, exclude: list[str], request: SplitRequest) -> tuple[Domain, Domain | None]:
    """Labelled source images of every subject not excluded; a seeded fraction of those
    subjects is held out whole as source-validation (model selection without target labels)."""
    keep = ~_subject_mask(samples, exclude) if exclude else torch.ones(len(samples), dtype=torch.bool)
    ids = [s for s in select_subjects(samples, "all") if s not in exclude]
    if not ids:
        raise DataError(f"dataset {samples.dataset!r}: no source subjects left after taking the targets")
    n_val = int(round(len(ids) * request.source_val)) if len(ids) > 1 else 0
    val_ids: list[str] = []
    if n_val:
        g = torch.Generator().manual_seed(request.seed + 17)
        val_ids = [ids[i] for i in torch.randperm(len(ids), generator=g)[:n_val].tolist()]
    val_mask = _subject_mask(samples, val_ids) if val_ids else torch.zeros(len(samples), dtype=torch.bool)
    src = labelled(samples, torch.nonzero(keep & ~val_mask).flatten())
    val = labelled(samples, torch.nonzero(keep & val_mask).flatten())
    if len(src) == 0:
        raise DataError(f"dataset {samples.dataset!r}: the source has no labelled images")
    return Domain(samples, src), (Domain(samples, val) if len(val) else None)


def _subject_target(samples: Samples, sid: str, source: Domain, val: Domain | None, request: SplitRequest) -> Target:
    idx = samples.indices_of_subject(sid)
    if len(idx) == 0:
        raise DataError(f"target subject {sid!r} has no images in dataset {samples.dataset!r}")
    adapt, evaluate = split_holdout(samples, idx, request.target_holdout, request.seed)
    return Target(sid, source, val, Domain(samples, adapt), Domain(samples, labelled(samples, evaluate)))


YawWeights = tuple[tuple[float, float], ...]  # (|yaw| degrees, relative weight), sorted by |yaw|


def _number(value: Any) -> float | None:
    """``value`` as a finite float (YAML numbers, or numeric strings from JSON-style keys), else None."""
    if isinstance(value, bool):
        return None
    try:
        out = float(value) if isinstance(value, (int, float, str)) else None
    except ValueError:
        return None
    return out if out is not None and math.isfinite(out) else None


def _yaw_max(value: Any) -> float | None:
    key = "data.protocol.source_yaw_max"
    if value is None:
        return None
    v = _number(value) if not isinstance(value, str) else None
    if v is None or not 0.0 <= v <= 90.0:
        raise RecipeError(f"must be a number of degrees in [0, 90], got {value!r}", key=key)
    return v


def _yaw_weights(value: Any, key: str) -> YawWeights | None:
    """``{|yaw|: weight}`` checked and sorted; weights are relative, at least one positive."""
    if value is None:
        return None
    want = "a mapping {|yaw| degrees in [0, 90]: weight >= 0} with a positive weight"
    if not isinstance(value, dict) or not value:
        raise RecipeError(f"must be {want}, got {value!r}", key=key)
    points = []
    for k, w in value.items():
        yaw, weight = _number(k), (None if isinstance(w, str) else _number(w))
        if yaw is None or not 0.0 <= yaw <= 90.0:
            raise RecipeError(f"|yaw| keys must be degrees in [0, 90], got {k!r}", key=key)
        if weight is None or weight < 0:
            raise RecipeError(f"weights must be numbers >= 0, got {w!r} for |yaw| {k!r}", key=key)
        points.append((yaw, weight))
    seen = [p[0] for p in points]
    twice = sorted({y for y in seen if seen.count(y) > 1})
    if twice:
        raise RecipeError(f"|yaw| {twice[0]:g} given twice, got {value!r}", key=key)
    if not any(w > 0 for _, w in points):
        raise RecipeError(f"must be {want}, got {value!r}", key=key)
    return tuple(sorted(points))


def _interpolate(points: YawWeights, abs_yaw: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear weight at each |yaw|, constant beyond the first and last point."""
    xs = torch.tensor([p[0] for p in points], dtype=torch.float64)
    ys = torch.tensor([p[1] for p in points], dtype=torch.float64)
    if len(xs) == 1:
        return ys.expand(len(abs_yaw)).clone()
    a = abs_yaw.double().clamp(float(xs[0]), float(xs[-1]))
    hi = torch.searchsorted(xs, a).clamp(1, len(xs) - 1)
    lo = hi - 1
    t = ((a - xs[lo]) / (xs[hi] - xs[lo])).clamp(0, 1)
    return ys[lo] + (ys[hi] - ys[lo]) * t


def _subset(samples: Samples, keep: torch.Tensor) -> Samples:
    """The kept images as a Samples of their own (same subject ids and dataset name).

    A domain's ``samples`` is everything training may reach from it (cross-pose partners are
    drawn from the whole capture), so views outside a pose shift must be absent, not just unindexed.
    """
    idx = torch.nonzero(keep).flatten()
    per_image = {name: t[idx] for name, t in samples.tensors().items()}
    paths = tuple(samples.paths[i] for i in idx.tolist()) if samples.paths else ()
    return attrs.evolve(samples, **per_image, paths=paths, problems=[])


@attrs.frozen
class PoseShift:
    """Which views the source people and the target people are seen in (the paper's setting).

    ``source_yaw_max``: source and source-validation images keep only |yaw| <= this. The yaw
    weights subsample images: each person keeps, at each |yaw|, the fraction weight(|yaw|) /
    (the largest weight at a |yaw| present) of their images there (weights interpolated linearly
    between the listed |yaw| values), so the share of |yaw| a among the kept images is
    proportional to n(a) x weight(a). Deterministic from the recipe seed.
    """

    source_yaw_max: float | None = None
    source_yaw_weights: YawWeights | None = None
    target_yaw_weights: YawWeights | None = None

    @property
    def shifts_source(self) -> bool:
        return self.source_yaw_max is not None or self.source_yaw_weights is not None

    def source_keep(self, samples: Samples, mask: torch.Tensor, seed: int) -> torch.Tensor:
        """Which of the ``mask`` images the source keeps."""
        _need_yaw(samples, mask, "a pose shift of the source")
        keep = mask.clone()
        if self.source_yaw_max is not None:
            keep &= samples.yaw.abs() <= self.source_yaw_max + 1e-6
            if not keep.any():
                yaws = samples.yaw[mask]
                raise DataError(f"data.protocol.source_yaw_max={self.source_yaw_max:g} leaves no source images "
                                f"(source yaws {float(yaws.min()):g}..{float(yaws.max()):g})")
        if self.source_yaw_weights is not None:
            keep = _subsample(samples, keep, self.source_yaw_weights, seed + 29)
        return keep

    def target_keep(self, samples: Samples, mask: torch.Tensor, seed: int) -> torch.Tensor:
        _need_yaw(samples, mask, "data.protocol.target_yaw_weights")
        assert self.target_yaw_weights is not None
        return _subsample(samples, mask, self.target_yaw_weights, seed + 31)


def _need_yaw(samples: Samples, mask: torch.Tensor, what: str) -> None:
    unknown = mask & torch.isnan(samples.yaw)
    if unknown.any():
        first = int(torch.nonzero(unknown)[0])
        where = samples.paths[first] if samples.paths else f"image {first}"
        raise DataError(f"{what} needs yaw labels: {int(unknown.sum())} image(s) of dataset {samples.dataset!r} "
                        f"have none, e.g. {where}")


def _subsample(samples: Samples, mask: torch.Tensor, weights: YawWeights, seed: int) -> torch.Tensor:
    """Per person and |yaw|, keep a weight/max-weight fraction of the ``mask`` images, chosen at
    random; a fractional count is rounded up with probability equal to its fraction."""
    g = torch.Generator().manual_seed(seed)
    abs_yaw = samples.yaw.abs()
    present = abs_yaw[mask].unique()
    top = float(_interpolate(weights, present).max())
    if top <= 0:
        raise DataError(f"yaw weights {dict(weights)} are 0 at every |yaw| present ({present.tolist()})")
    keep = torch.zeros_like(mask)
    for subject in samples.subject[mask].unique().tolist():
        mine = mask & (samples.subject == subject)
        for a in abs_yaw[mine].unique().tolist():
            group = torch.nonzero(mine & (abs_yaw == a)).flatten()
            rate = float(_interpolate(weights, torch.tensor([a]))[0]) / top
            exact = rate * len(group)
            count = int(exact) + int(float(torch.rand((), generator=g)) < exact - int(exact))
            keep[group[torch.randperm(len(group), generator=g)[:count]]] = True
    return keep


def _yaw_counts(samples: Samples, indices: torch.Tensor) -> str:
    vals, counts = samples.yaw[indices].abs().unique(return_counts=True)
    return ", ".join(f"{v:g}: {c}" for v, c in zip(vals.tolist(), counts.tolist()))


class Personalized:
    """Each chosen subject is its own target domain; one source model from all other subjects.

    Pose shift (optional): ``source_yaw_max`` restricts the source people to a range of views,
    ``source_yaw_weights`` / ``target_yaw_weights`` reweight the views each side is seen in by
    subsampling images (see :class:`PoseShift`). Target people keep all their views unless
    ``target_yaw_weights`` is given.
    """

    def __init__(self, source_yaw_max: float | None = None, source_yaw_weights: dict[Any, float] | None = None,
                 target_yaw_weights: dict[Any, float] | None = None) -> None:
        self.shift = PoseShift(_yaw_max(source_yaw_max),
                               _yaw_weights(source_yaw_weights, "data.protocol.source_yaw_weights"),
                               _yaw_weights(target_yaw_weights, "data.protocol.target_yaw_weights"))

    def split(self, source: Samples, target: Samples | None, request: SplitRequest) -> list[Target]:
        if target is not None:
            raise DataError("the personalized protocol takes one dataset; use protocol `cross_dataset` for two")
        ids = select_subjects(source, request.target_subjects)
        targets = _subject_mask(source, ids)
        src_samples, tgt_samples = source, source
        if self.shift.shifts_source:
            src_samples = _subset(source, self.shift.source_keep(source, ~targets, request.seed))
        if self.shift.target_yaw_weights is not None:
            tgt_samples = _subset(source, self.shift.target_keep(source, targets, request.seed))
        src, val = _source_domains(src_samples, ids, request)
        out = [_subject_target(tgt_samples, sid, src, val, request) for sid in ids]
        if self.shift.shifts_source or self.shift.target_yaw_weights is not None:
            every = torch.arange(len(tgt_samples))[_subject_mask(tgt_samples, ids)]
            logger.info("pose shift: source images by |yaw| {{{}}}; target images by |yaw| {{{}}}",
                        _yaw_counts(src_samples, torch.arange(len(src_samples))), _yaw_counts(tgt_samples, every))
        return out


class LeaveOneSubjectOut:
    """One fold per chosen subject, each with a source model trained on all the others."""

    def split(self, source: Samples, target: Samples | None, request: SplitRequest) -> list[Target]:
        if target is not None:
            raise DataError("leave_one_subject_out takes one dataset")
        out = []
        for sid in select_subjects(source, request.target_subjects):
            src, val = _source_domains(source, [sid], request)
            out.append(_subject_target(source, sid, src, val, request))
        return out


class CrossDataset:
    """Source dataset A to target dataset B: B as one target, or each B subject on its own."""

    def __init__(self, per_subject: bool = False) -> None:
        self.per_subject = per_subject

    def split(self, source: Samples, target: Samples | None, request: SplitRequest) -> list[Target]:
        if target is None:
            raise DataError("protocol cross_dataset needs data.target_dataset")
        src, val = _source_domains(source, [], request)
        if self.per_subject:
            return [_subject_target(target, sid, src, val, request) for sid in select_subjects(target, request.target_subjects)]
        adapt, evaluate = split_holdout(target, torch.arange(len(target)), request.target_holdout, request.seed)
        return [Target(target.dataset, src, val, Domain(target, adapt), Domain(target, labelled(target, evaluate)))]


@hookimpl
def facedapt_register_protocols(registry) -> None:
    registry.register("personalized", Personalized)
    registry.register("leave_one_subject_out", LeaveOneSubjectOut)
    registry.register("cross_dataset", CrossDataset)
