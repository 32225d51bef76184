"""features.pt: a small 2-D projection of a target's expression features, written per target
so that the report can plot them without the data or the model."""

from __future__ import annotations

from pathlib import Path

import torch
from loguru import logger

from facedapt.data.splits import Domain

#: Points per target in features.pt (the report's 2-D projection): enough to see clusters.
FEATURE_POINTS = 2000


def save_features(path: Path, out: dict[str, torch.Tensor], domain: Domain, seed: int) -> None:
    """features.pt: a 2-D PCA of at most FEATURE_POINTS expression features with their
    expression labels and yaws (nothing written where the method exposes no features)."""
    feat = out.get("feat_expression")
    if feat is None or len(feat) < 3:
        return
    keep = torch.arange(len(feat))
    if len(keep) > FEATURE_POINTS:
        keep = torch.randperm(len(feat), generator=torch.Generator().manual_seed(seed))[:FEATURE_POINTS].sort().values
    x = feat[keep].float()
    x = x - x.mean(0)
    # pca_lowrank draws random numbers: keep the global stream (training reproducibility) untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(x, q=min(2, *x.shape), center=False)
    xy = x @ v[:, :2]
    if xy.shape[1] < 2:
        xy = torch.cat([xy, torch.zeros(len(xy), 2 - xy.shape[1])], 1)
    idx = domain.indices[keep]
    try:
        torch.save({"expression_2d": xy.contiguous(), "expression": domain.samples.expression[idx].clone(),
                    "yaw": domain.samples.yaw[idx].float().clone()}, path)
    except OSError as exc:  # only the report's projection is lost: not worth failing the run
        logger.warning("{}: cannot write ({})", path, exc.strerror or exc)
