"""Evaluation: predictions over a domain, metrics per subject and per yaw, leakage probes."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from facedapt.data.batches import image_batches
from facedapt.data.samples import EXPRESSIONS, NUM_POSE_BINS
from facedapt.data.splits import Domain
from facedapt.method import Method
from facedapt.plugin_manager import Plugins


@torch.no_grad()
def predict_domain(method: Method, domain: Domain, device: torch.device, batch_size: int, autocast: Any,
                   domain_name: str = "target", features: bool = False) -> dict[str, torch.Tensor]:
    """Predicted classes (and optionally features) for every image of ``domain``, on the CPU."""
    method.train(False)
    preds, feats = [], {}
    for images in image_batches(domain.samples, domain.indices, device, batch_size):
        with autocast():
            if features:
                logits, named = method.predict_with_features(images, domain=domain_name)
                for k, v in named.items():
                    feats.setdefault(k, []).append(v.float().cpu())
            else:
                logits = method.predict(images, domain=domain_name)
        preds.append(logits.float().argmax(1).cpu())
    out = {"pred": torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)}
    out.update({f"feat_{k}": torch.cat(v) for k, v in feats.items()})
    return out


def confusion_matrix(pred: torch.Tensor, true: torch.Tensor, num_classes: int) -> torch.Tensor:
    keep = true >= 0
    flat = true[keep] * num_classes + pred[keep]
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def score(domain: Domain, pred: torch.Tensor, plugins: Plugins, metrics: list[str], num_classes: int) -> dict[str, Any]:
    """Metrics overall and per yaw, and the confusion matrix, for one domain's predictions."""
    s = domain.samples
    true = s.expression[domain.indices]
    conf = confusion_matrix(pred, true, num_classes)
    out: dict[str, Any] = {name: plugins.registry("metrics").get(name)(conf) for name in metrics}
    out["n"] = int((true >= 0).sum())
    yaw = s.yaw[domain.indices]
    per_yaw = {}
    if not torch.isnan(yaw).all():
        for y in torch.unique(yaw[~torch.isnan(yaw)]).tolist():
            m = (yaw == y) & (true >= 0)
            if m.any():
                per_yaw[str(int(round(y)))] = float((pred[m] == true[m]).float().mean())
    out["per_yaw"] = dict(sorted(per_yaw.items(), key=lambda kv: int(kv[0])))
    out["confusion"] = conf.tolist()
    return out


def linear_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, steps: int, seed: int) -> float:
    """Held-out accuracy of a fresh linear classifier on (x, y): how much y leaks into x."""
    keep = y >= 0
    x, y = x[keep], y[keep]
    if len(y) < 8 or len(torch.unique(y)) < 2:
        return float("nan")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    half = len(y) // 2
    tr, te = perm[:half], perm[half:]
    mean, std = x[tr].mean(0), x[tr].std(0).clamp(min=1e-6)
    x = (x - mean) / std
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe = nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(probe(x[tr]), y[tr]).backward()
            opt.step()
    with torch.no_grad():
        return float((probe(x[te]).argmax(1) == y[te]).float().mean())


def predictions_with_features(method: Method, domain: Domain, device: torch.device, batch_size: int,
                              autocast: Any, domain_name: str = "target") -> dict[str, torch.Tensor]:
    """``predict_domain`` with features where the method exposes them (a plugin method need not
    implement ``features``). On labelled source images one such pass serves their accuracy,
    ``leakage`` and ``cross_classifier_ce``."""
    try:
        return predict_domain(method, domain, device, batch_size, autocast, domain_name=domain_name, features=True)
    except NotImplementedError:
        return predict_domain(method, domain, device, batch_size, autocast, domain_name=domain_name)


def leakage(out: dict[str, torch.Tensor], domain: Domain, steps: int, seed: int) -> dict[str, float]:
    """Linear-probe leakage on labelled source images (``out`` from ``predictions_with_features``): pose
    from f_e, expression from f_p."""
    s = domain.samples
    result = {}
    if "feat_expression" in out and s.has_pose:
        result["pose_from_expression"] = linear_probe(out["feat_expression"], s.pose_bin[domain.indices], NUM_POSE_BINS, steps, seed)
    if "feat_pose" in out:
        result["expression_from_pose"] = linear_probe(out["feat_pose"], s.expression[domain.indices], len(EXPRESSIONS), steps, seed)
    return {k: v for k, v in result.items() if not math.isnan(v)}


def leakage_chance(domain: Domain) -> dict[str, float]:
    """What each ``leakage`` probe scores by always answering the commonest label of its images:
    its chance level (1/5 for pose where the source is seen only within 30 degrees of frontal)."""
    s = domain.samples
    labels = {"expression_from_pose": s.expression[domain.indices]}
    if s.has_pose:
        labels["pose_from_expression"] = s.pose_bin[domain.indices]
    out = {}
    for key, y in labels.items():
        y = y[y >= 0]
        if len(y):
            out[key] = float(torch.bincount(y).max()) / len(y)
    return out


def fresh_probes(method: Method, domain: Domain, device: torch.device, batch_size: int, autocast: Any, steps: int,
                 seed: int) -> dict[str, float]:
    """``leakage`` of the method as it is now (the probe a method may call during training)."""
    return leakage(predictions_with_features(method, domain, device, batch_size, autocast, "source"), domain, steps, seed)


def cross_classifier_ce(method: Method, out: dict[str, torch.Tensor], domain: Domain,
                        device: torch.device) -> dict[str, float]:
    """Cross-entropy of the method's own cross classifiers (``Method.cross_logits``) on labelled
    source images (``out`` from ``predictions_with_features``), keyed like ``leakage``: near chance (log 13
    for pose, log 7 for expression) when they read nothing, or when they never learnt."""
    feats = {k.removeprefix("feat_"): v for k, v in out.items() if k.startswith("feat_")}
    if not feats:
        return {}
    s = domain.samples
    labels = {"pose_from_expression": s.pose_bin[domain.indices] if s.has_pose else None,
              "expression_from_pose": s.expression[domain.indices]}
    with torch.no_grad():
        logits = method.cross_logits({k: v.to(device) for k, v in feats.items()})
    result = {}
    for name, z in logits.items():
        y = labels[name]
        if y is not None and bool((y >= 0).any()):
            result[name] = float(nn.functional.cross_entropy(z.float().cpu(), y.long(), ignore_index=-1))
    return result
