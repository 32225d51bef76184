"""Built-in metrics: each takes a confusion matrix (rows: true class, columns: predicted)."""

from __future__ import annotations

import torch

from facedapt import hookimpl


def accuracy(confusion: torch.Tensor) -> float:
    total = confusion.sum()
    return float(confusion.diag().sum() / total) if total > 0 else float("nan")


def uar(confusion: torch.Tensor) -> float:
    """Unweighted average recall (balanced accuracy) over the classes present."""
    support = confusion.sum(1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((confusion.diag()[present] / support[present]).mean())


def macro_f1(confusion: torch.Tensor) -> float:
    """F1 averaged over the classes present in the ground truth."""
    tp = confusion.diag().double()
    support = confusion.sum(1).double()
    predicted = confusion.sum(0).double()
    denom = support + predicted
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    present = support > 0
    return float(f1[present].mean()) if present.any() else float("nan")


@hookimpl
def facedapt_register_metrics(registry) -> None:
    registry.register("accuracy", accuracy)
    registry.register("uar", uar)
    registry.register("macro_f1", macro_f1)
