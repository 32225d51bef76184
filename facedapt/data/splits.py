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


def split_holdout(indices: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(adapt, evaluate): transductive (both all of ``indices``) when fraction is 0."""
    if fraction <= 0:
        return indices, indices
    g = torch.Generator().manual_seed(seed)
    perm = indices[torch.randperm(len(indices), generator=g)]
    n_eval = max(1, int(round(len(indices) * fraction)))
    if n_eval >= len(indices):
        raise DataError(f"data.target_holdout={fraction} leaves no images to adapt on ({len(indices)} images)")
    return perm[n_eval:].sort().values, perm[:n_eval].sort().values


def labelled(samples: Samples, indices: torch.Tensor) -> torch.Tensor:
    return indices[samples.expression[indices] >= 0]
