"""What a protocol plugin returns: source, source-validation and target domains as index sets."""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import attrs
import torch

from facedapt.data.samples import Samples
from facedapt.errors import DataError


@attrs.frozen(eq=False)
class Domain:
    samples: Samples
    indices: torch.Tensor

    def __len__(self) -> int:
        return len(self.indices)

    def digest(self) -> str:
        return hashlib.sha256(self.samples.dataset.encode() + self.indices.numpy().tobytes()).hexdigest()[:12]


@attrs.frozen(eq=False)
class Target:
    """One target domain: adapted on ``adapt`` (unlabelled), measured on ``evaluate``.

    ``source`` and ``source_val`` are the labelled data its source model is trained and
    selected on; targets that share them share one source model (trained once).
    """

    id: str
    source: Domain
    source_val: Domain | None
    adapt: Domain
    evaluate: Domain


@attrs.frozen
class SplitRequest:
    """The recipe's data keys a protocol honours."""

    target_subjects: Any  # "all" | {"first": N} | [ids]
    target_holdout: float
    source_val: float
    seed: int


class SplitProtocol(Protocol):
    """What a protocol plugin's factory returns."""

    def split(self, source: Samples, target: Samples | None, request: SplitRequest) -> list[Target]: ...


def select_subjects(samples: Samples, spec: Any, key: str = "data.target_subjects") -> list[str]:
    """Subject ids chosen by ``all``, ``{first: N}`` or a list (ids compared as strings)."""
    ids = list(samples.subject_ids)
    present = [sid for i, sid in enumerate(ids) if bool((samples.subject == i).any())]
    if spec == "all":
        return present
    if isinstance(spec, dict):
        return present[: int(spec["first"])]
    chosen = [str(s) for s in spec]
    missing = [s for s in chosen if s not in present]
    if missing:
        raise DataError(f"{key}: subject(s) {', '.join(missing)} not in dataset {samples.dataset!r} "
                        f"(subjects: {', '.join(present[:10])}{' ...' if len(present) > 10 else ''})")
    return chosen


def split_holdout(samples: Samples, indices: torch.Tensor, fraction: float,
                  seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(adapt, evaluate): transductive (both all of ``indices``) when fraction is 0.

    Whole captures go to one side (every view of one expression instance), so no evaluated
    image has another view of its own capture among the adaptation images; within each
    expression a ``fraction`` of its captures is held out (at least one where the expression
    has two or more), so both sides see every expression. An image of unknown capture is a
    capture of its own.
    """
    if fraction <= 0:
        return indices, indices
    g = torch.Generator().manual_seed(seed)
    capture = samples.capture[indices]
    # Unknown captures (-1) become singletons, numbered past every real capture id.
    singles = int(capture.max()) + 1 + torch.arange(len(indices)) if len(indices) else capture
    capture = torch.where(capture < 0, singles, capture)
    caps, first = _first_of_each(capture)
    cap_expr = samples.expression[indices[first]]
    held = torch.zeros(len(caps), dtype=torch.bool)
    for expr in cap_expr.unique().tolist():
        members = torch.nonzero(cap_expr == expr).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        n_eval = int(round(len(members) * fraction))
        if len(members) > 1:
            n_eval = min(max(n_eval, 1), len(members) - 1)
        held[members[:n_eval]] = True
    if not held.any():  # every expression had a single capture: hold out whole captures anyway
        held[torch.randperm(len(caps), generator=g)[:max(1, int(round(len(caps) * fraction)))]] = True
    if held.all():
        raise DataError(f"data.target_holdout={fraction} leaves no images to adapt on "
                        f"({len(indices)} images in {len(caps)} captures)")
    evaluate = torch.isin(capture, caps[held])
    return indices[~evaluate], indices[evaluate]


def _first_of_each(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct values (sorted) and, for each, the position of its first occurrence."""
    uniq, inverse = torch.unique(values, return_inverse=True)
    first = torch.full((len(uniq),), len(values), dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(len(values)), reduce="amin")
    return uniq, first


def labelled(samples: Samples, indices: torch.Tensor) -> torch.Tensor:
    return indices[samples.expression[indices] >= 0]
