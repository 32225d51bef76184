"""Built-in protocols: personalized targets, leave-one-subject-out folds, cross-dataset."""

from __future__ import annotations

import torch

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
from facedapt.errors import DataError


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


class Personalized:
    """Each chosen subject is its own target domain; one source model from all other subjects."""

    def split(self, source: Samples, target: Samples | None, request: SplitRequest) -> list[Target]:
        if target is not None:
            raise DataError("the personalized protocol takes one dataset; use protocol `cross_dataset` for two")
        ids = select_subjects(source, request.target_subjects)
        src, val = _source_domains(source, ids, request)
        return [_subject_target(source, sid, src, val, request) for sid in ids]


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
