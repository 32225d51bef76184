"""results.json: per-target scores aggregated into the one schema every table reads, and the
lines that tell a person what a run achieved."""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch

from facedapt.data.samples import EXPRESSIONS
from facedapt.recipe.schema import Recipe

#: Per-target keys copied into results.json's ``per_subject`` besides the metrics, where present.
PER_SUBJECT_KEYS = ("n", "source_accuracy", "gain")


def aggregate(per_subject: dict[str, dict], r: Recipe, precision: str, num_classes: int) -> dict[str, Any]:
    """results.json from per-target scores (each as ``score`` returns it, plus ``seconds`` and,
    for adapted targets, ``source_accuracy`` and ``gain``)."""
    results: dict[str, Any] = {"method": r.method.name, "recipe": r.name, "seed": r.seed,
                               "selection": r.eval.selection, "precision": precision}
    if r.eval.selection == "oracle":
        results["selection_note"] = "oracle: model chosen on target labels (an upper bound, not a result)"
    for name in r.eval.metrics:
        vals = [v[name] for v in per_subject.values() if not math.isnan(v[name])]
        results[f"target_{name}"] = statistics.fmean(vals) if vals else float("nan")
        results[f"target_{name}_std"] = statistics.pstdev(vals) if len(vals) > 1 else 0.0
    results["per_subject"] = {sid: {k: v[k] for k in (*r.eval.metrics, *PER_SUBJECT_KEYS) if k in v}
                              for sid, v in per_subject.items()}
    # Before/after: the source model's accuracy on the same evaluation images, and the change.
    for key in ("source_accuracy", "gain"):
        vals = [v[key] for v in per_subject.values() if key in v and not math.isnan(v[key])]
        if vals:
            results[key] = statistics.fmean(vals)
    gains = [v["gain"] for v in per_subject.values() if "gain" in v]
    if gains:
        results["subjects_improved"] = sum(g > 0 for g in gains)
        results["worst_gain"] = min(gains)
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for v in per_subject.values():
        conf += torch.tensor(v["confusion"], dtype=torch.long)
    by_yaw = lambda kv: int(kv[0])  # noqa: E731 - degrees as strings, in numeric order
    results["per_yaw"] = _mean_per_key(per_subject, "per_yaw", by_yaw)
    source_per_yaw = _mean_per_key(per_subject, "source_per_yaw", by_yaw)
    if source_per_yaw:
        results["source_per_yaw"] = source_per_yaw
    sv = [v["source_val_accuracy"] for v in per_subject.values() if "source_val_accuracy" in v]
    results["source_val_accuracy"] = statistics.fmean(sv) if sv else None
    results["leakage"] = _mean_per_key(per_subject, "leakage")
    results["leakage_chance"] = _mean_per_key(per_subject, "leakage_chance")
    # The method's own cross classifiers on the same held-out images (cross-entropy, mean over
    # targets), and the fresh probes logged during training (source phase, then each target's).
    results["cross_classifier_ce"] = _mean_per_key(per_subject, "cross_classifier_ce")
    results["training_probe"] = [{**rec, "target": sid if rec["phase"] == "adapt" else None}
                                 for sid, v in per_subject.items() for rec in v.get("training_probe", [])]
    results["confusion"] = conf.tolist()
    results["classes"] = list(EXPRESSIONS[:num_classes])
    results["timing"] = {"per_subject_adapt": {sid: v["seconds"] for sid, v in per_subject.items() if "seconds" in v}}
    return results


def _mean_per_key(per_subject: dict[str, dict], field: str, order: Any = None) -> dict[str, float]:
    """The mean over targets of each key of the targets' ``field`` dicts (a target may lack some)."""
    values: dict[str, list[float]] = {}
    for v in per_subject.values():
        for k, x in v.get(field, {}).items():
            values.setdefault(k, []).append(x)
    items = sorted(values.items(), key=order) if order else values.items()
    return {k: statistics.fmean(x) for k, x in items}


def summary_lines(results: dict[str, Any]) -> list[str]:
    """What a finished run says: accuracy after adaptation, before it (the source model on the
    same images), and the change, overall and per target."""
    per = results["per_subject"]
    if per and all(v.get("n") == 0 for v in per.values()):  # unlabelled photos: adapted, nothing to score
        return [f"adapted to {len(per)} target(s) without labels ({', '.join(per)}): no accuracy to report"]
    head = (f"target accuracy {results['target_accuracy']:.4f} (selection: {results['selection']}) over "
            f"{len(per)} target(s)")
    if "source_accuracy" in results:
        head += (f"; before adaptation {results['source_accuracy']:.4f}, gain {100 * results['gain']:+.1f} points, "
                 f"{results['subjects_improved']} of {len(per)} improved")
    lines = [head]
    for sid, v in per.items():
        line = f"  {sid}: {v['accuracy']:.4f} (n={v['n']})"
        if "source_accuracy" in v:
            line += f"  before {v['source_accuracy']:.4f}  gain {100 * v['gain']:+.1f}"
        lines.append(line)
    return lines
