"""Source-free adaptation: TENT trains only the normalization layers' affine parameters on the
target's prediction entropy; `train.init_from: built` starts from the models as built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_same_models, model_state, run_toy, toy_recipe
from facedapt_plugins.layers import DomainBatchNorm
from facedapt_plugins.methods.source_free import Tent, affine_parameters

from facedapt.engine.build import build_method, load_targets
from facedapt.engine.build import model_state as built_state
from facedapt.errors import RecipeError
from facedapt.plugin_manager import Plugins


def _is_affine(model: str, key: str, tent_state: dict) -> bool:
    """State-dict keys of normalization affine parameters in the trunk."""
    return model in ("backbone", "expression_encoder") and key.rsplit(".", 1)[-1] in ("weight", "bias") and \
        tent_state[model][key].dim() == 1 and f"{key.rsplit('.', 1)[0]}.running_mean_source" in tent_state[model]


def test_tent_adapts_only_the_normalization_affine_parameters(tmp_path: Path, toy_plugins: Plugins) -> None:
    run_toy(toy_plugins, tmp_path / "run", "data.target_subjects={first: 1}", "train.steps=6",
            "eval.leakage_probe=false", method="tent")
    source = model_state(tmp_path / "run" / "source" / "model.pt")
    (subject,) = [p for p in (tmp_path / "run" / "subjects").iterdir()]
    adapted = model_state(subject / "model.pt")
    changed, kept = [], []
    for model, tensors in source.items():
        for key, value in tensors.items():
            if "running_" in key or "num_batches_tracked" in key:
                continue
            (changed if not torch.equal(value, adapted[model][key]) else kept).append((model, key))
    assert changed, "TENT changed nothing"
    assert all(_is_affine(m, k, source) for m, k in changed), changed
    # The classifier and every convolution and linear weight stay as the source model had them.
    assert ("expression_classifier", "fc.weight") in kept and ("backbone", "features.0.weight") in kept
    # The target's running statistics moved; the source's did not.
    key = "features.1.running_mean_"
    assert torch.equal(source["backbone"][key + "source"], adapted["backbone"][key + "source"])
    assert not torch.equal(source["backbone"][key + "target"], adapted["backbone"][key + "target"])


def test_tent_lowers_the_entropy_it_minimizes(tmp_path: Path, toy_plugins: Plugins) -> None:
    run_toy(toy_plugins, tmp_path / "run", "data.target_subjects={first: 1}", "train.steps=30", "train.log_every=1",
            "train.adapt_optimizer={name: torch.optim.Adam, lr: 0.01}", "eval.leakage_probe=false", method="tent")
    lines = (tmp_path / "run" / "subjects").glob("*/metrics.jsonl")
    entropies = [json.loads(line)["entropy"] for f in lines for line in f.read_text().splitlines()]
    assert len(entropies) == 30
    assert sum(entropies[-5:]) / 5 < sum(entropies[:5]) / 5


def test_tent_trains_everything_in_a_source_phase(toy_plugins: Plugins) -> None:
    method = build_method(toy_plugins, toy_recipe(method="tent").recipe, 6, (1, 16, 16), 3)
    assert isinstance(method, Tent)
    names = method.optimizer_groups()["main"]
    adapt = method.trainable_parameters(names, "adapt")
    norms = [m for m in method.models["backbone"].modules() if isinstance(m, DomainBatchNorm)]
    assert norms and {id(p) for p in adapt} == {id(p) for p in affine_parameters(method.models.values())}
    everything = [p for n in names for p in method.models[n].parameters()]
    assert {id(p) for p in method.trainable_parameters(names, "source")} == {id(p) for p in everything}
    assert all(p.requires_grad for p in everything)


def test_init_from_built_starts_from_the_models_as_built(tmp_path: Path, toy_plugins: Plugins) -> None:
    overrides = ("train.source_steps=0", "train.init_from=built", "data.target_subjects={first: 1}",
                 "eval.leakage_probe=false")
    run_toy(toy_plugins, tmp_path / "run", *overrides, method="source_only")
    # What the runner builds: the same seed, data and shapes, and no training at all.
    r = toy_recipe(*overrides, method="source_only").recipe
    torch.manual_seed(r.seed)
    targets, num_classes = load_targets(toy_plugins, r)
    first = targets[0].source.samples
    method = build_method(toy_plugins, r, len(first.subject_ids), first.image_shape, num_classes)
    assert_same_models(model_state(tmp_path / "run" / "source" / "model.pt"), built_state(method))
    with pytest.raises(RecipeError, match="train.source_steps.*`built`"):
        run_toy(toy_plugins, tmp_path / "bad", "train.source_steps=0", method="tent")
