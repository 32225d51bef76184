"""Statistics of comparisons: paired differences with a 95% interval (paired t).

Results are paired by (seed, person): two methods measured on the same person of the same seed
(same images, same source data) differ only by the method, so the spread of their differences
is what decides whether one beats the other. The interval is Student's t over those pairs; it
treats the pairs as independent, which the people of one seed (sharing a source model) are not
quite, so read a narrow interval from few seeds with care.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF)."""
    if df < 1 or not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: need df >= 1 and 0 < p < 1, got df={df}, p={p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2.0


def t_cdf(t: float, df: int) -> float:
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t >= 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by its continued fraction (Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast only below this point
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return front * f


def paired(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, Any]:
    """``a - b`` over the keys both hold (e.g. ``"<seed>/<person>"``): mean, 95% interval (paired
    t), the number of pairs and how many of them ``a`` improved (difference > 0). With
    ``"<seed>/<person>"`` keys also the mean per seed (``per_seed``): the people of a seed share
    its source models, so the interval, which treats pairs as independent, should be read with
    how much the seeds agree."""
    keys = [k for k in a if k in b and not (_nan(a[k]) or _nan(b[k]))]
    diffs = [a[k] - b[k] for k in keys]
    n = len(diffs)
    if n == 0:
        return {"mean": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0, "improved": 0}
    mean = statistics.fmean(diffs)
    if n > 1:
        half = t_quantile(0.975, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
        ci = [mean - half, mean + half]
    else:
        ci = [float("nan"), float("nan")]
    out = {"mean": mean, "ci95": ci, "n": n, "improved": sum(d > 0 for d in diffs), "method": "paired t"}
    if all("/" in k for k in keys):
        by_seed: dict[str, list[float]] = {}
        for k, d in zip(keys, diffs):
            by_seed.setdefault(k.split("/", 1)[0], []).append(d)
        out["per_seed"] = {seed: statistics.fmean(ds) for seed, ds in by_seed.items()}
    return out


def excludes_zero(p: Mapping[str, Any]) -> bool:
    lo, hi = p["ci95"]
    return not (_nan(lo) or _nan(hi)) and (lo > 0 or hi < 0)


def sample_std(xs: list[float]) -> float:
    """Sample standard deviation (n - 1); 0 for fewer than two values."""
    xs = [x for x in xs if not _nan(x)]
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))
