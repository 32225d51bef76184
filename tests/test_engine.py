"""The engine on the toy dataset: run directory contents, reproduction from recipe.yaml,
resume, every method, target-label isolation and exact resume after an interruption."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import toy_plugin
from conftest import assert_same_models, model_state, run_toy, toy_recipe

from facedapt import hookimpl
from facedapt.data.samples import Samples
from facedapt.engine.run import Runner
from facedapt.errors import CheckpointError, UsageError
from facedapt.plugin_manager import Plugins, load_plugins
from facedapt.recipe.load import load_recipe

SCHEMA_KEYS = {"method", "seed", "selection", "target_accuracy", "target_uar", "target_macro_f1", "per_subject",
               "per_yaw", "source_val_accuracy", "leakage", "confusion", "timing"}


class Recorder:
    """Records (phase, target, step) of every logged step."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str | None, int]] = []

    @hookimpl
    def facedapt_on_step_end(self, run: Any, step: int, metrics: dict[str, Any]) -> None:
        self.steps.append((run.phase, run.target, step))


class Interrupter:
    """Stops the run like Ctrl-C at one step of one phase."""

    def __init__(self, phase: str, step: int) -> None:
        self.phase, self.step = phase, step

    @hookimpl
    def facedapt_on_step_end(self, run: Any, step: int, metrics: dict[str, Any]) -> None:
        if run.phase == self.phase and step == self.step:
            raise KeyboardInterrupt


class PoisonedToy(toy_plugin.ToyFaces):
    """The toy faces with garbage expression labels for subject T00 (images unchanged)."""

    name = "toy_poisoned"

    def fingerprint(self) -> str:
        return "poisoned-" + super().fingerprint()

    def load(self) -> Samples:
        samples = super().load()
        t00 = samples.subject == samples.subject_ids.index("T00")
        expression = samples.expression.clone()
        expression[t00] = (expression[t00] + 1 + torch.arange(int(t00.sum())) % 2) % self.classes
        assert (expression[t00] != samples.expression[t00]).all()
        samples.expression.copy_(expression)
        return samples


class PoisonedPlugin:
    @hookimpl
    def facedapt_register_datasets(self, registry: Any) -> None:
        registry.register("toy_poisoned", PoisonedToy)


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory, toy_plugins: Plugins) -> tuple[Path, dict]:
    """One finished pada run with two targets, shared by the read-only checks."""
    run_dir = tmp_path_factory.mktemp("done") / "run"
    return run_dir, run_toy(toy_plugins, run_dir)


def test_run_directory_contents(done: tuple[Path, dict]) -> None:
    run_dir, results = done
    for name in ("recipe.yaml", "log.txt", "environment.json", "results.json", "source/model.pt",
                 "source/metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "results.json").read_text()) == json.loads(json.dumps(results))
    assert SCHEMA_KEYS <= set(results)
    assert results["method"] == "pada" and results["seed"] == 0 and results["selection"] == "last"
    assert set(results["per_subject"]) == {"T00", "T01"}
    for v in results["per_subject"].values():
        assert {"accuracy", "uar", "macro_f1", "n"} <= set(v) and 0 <= v["accuracy"] <= 1 and v["n"] == 18
    assert set(results["per_yaw"]) == {"-30", "0", "30"}
    assert set(results["leakage"]) == {"pose_from_expression", "expression_from_pose"}
    # Chance for each probe: the commonest label's share of the probe's images (three views here)
    assert set(results["leakage_chance"]) == {"pose_from_expression", "expression_from_pose"}
    assert 1 / 3 <= results["leakage_chance"]["pose_from_expression"] < 0.6
    assert sum(map(sum, results["confusion"])) == 36
    assert {"data", "source", "adapt", "total"} <= set(results["timing"])
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["versions"]["plugin:facedapt"] and env["precision"] == "fp32"
    log = (run_dir / "log.txt").read_text()
    assert "target T00" in log and "target accuracy" in log
    records = [json.loads(ln) for ln in (run_dir / "source" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6] and all(r["phase"] == "source" for r in records)


@pytest.mark.parametrize("sid", ["T00", "T01"])
def test_subject_outputs(done: tuple[Path, dict], sid: str) -> None:
    run_dir, results = done
    sdir = run_dir / "subjects" / sid
    state = torch.load(sdir / "model.pt", map_location="cpu", weights_only=True)
    assert state["kind"] == "adapted" and state["target"] == sid and state["method"] == "pada"
    assert "backbone" in state["models"] and all(isinstance(v, torch.Tensor) for v in state["models"]["backbone"].values())
    res = json.loads((sdir / "results.json").read_text())
    assert res["accuracy"] == results["per_subject"][sid]["accuracy"]
    assert [json.loads(ln)["step"] for ln in (sdir / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    assert not list(sdir.glob("ckpt-*.pt"))


def test_written_recipe_reproduces_the_run(done: tuple[Path, dict], toy_plugins: Plugins, tmp_path: Path) -> None:
    run_dir, results = done
    again = load_recipe(run_dir / "recipe.yaml")
    assert again.resolved == toy_recipe().resolved
    results2 = run_toy(toy_plugins, tmp_path / "again", loaded=again)
    assert results2["per_subject"] == results["per_subject"]
    assert results2["confusion"] == results["confusion"]
    for sid in ("T00", "T01"):
        assert_same_models(model_state(run_dir / "subjects" / sid / "model.pt"),
                           model_state(tmp_path / "again" / "subjects" / sid / "model.pt"))


def test_resume_redoes_only_unfinished_targets(done: tuple[Path, dict], tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(done[0], run_dir)
    t01 = model_state(run_dir / "subjects" / "T01" / "model.pt")
    (run_dir / "subjects" / "T00" / "results.json").unlink()
    recorder = Recorder()
    results = run_toy(load_plugins(extra=[toy_plugin, recorder]), run_dir, resume=True)
    assert recorder.steps == [("adapt", "T00", 2), ("adapt", "T00", 4)]
    assert (run_dir / "subjects" / "T00" / "results.json").is_file()
    assert results["per_subject"] == done[1]["per_subject"]
    assert_same_models(model_state(run_dir / "subjects" / "T01" / "model.pt"), t01)


def test_resume_of_finished_run_trains_nothing(done: tuple[Path, dict], tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(done[0], run_dir)
    recorder = Recorder()
    results = run_toy(load_plugins(extra=[toy_plugin, recorder]), run_dir, resume=True)
    assert recorder.steps == []
    assert results["per_subject"] == done[1]["per_subject"]


def test_resume_with_changed_recipe_refuses(done: tuple[Path, dict], toy_plugins: Plugins) -> None:
    with pytest.raises(UsageError, match="recipe changed") as info:
        Runner(toy_recipe("train.steps=5", "seed=4"), run_dir=done[0], resume=True, plugins=toy_plugins)
    assert "train.steps: 4 -> 5" in str(info.value) and "seed: 0 -> 4" in str(info.value)
    Runner(toy_recipe("train.steps=5"), run_dir=done[0], resume=True, allow_changed=True, plugins=toy_plugins)


def test_fresh_run_into_existing_run_dir_refuses(done: tuple[Path, dict], toy_plugins: Plugins) -> None:
    with pytest.raises(UsageError, match="already holds a run"):
        Runner(toy_recipe(), run_dir=done[0], plugins=toy_plugins)


def test_resume_of_missing_run_refuses(toy_plugins: Plugins, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a run directory"):
        Runner(toy_recipe(), run_dir=tmp_path, resume=True, plugins=toy_plugins)


@pytest.mark.parametrize(("method", "extra"), [
    ("source_only", ()),
    ("adabn", ()),
    ("dann", ()),
    ("cdan", ()),
    ("pada", ("eval.selection=source_val", "train.eval_every=2")),
    ("target_supervised", ("data.target_holdout=0.5",)),
])
def test_each_method_runs(method: str, extra: tuple[str, ...], toy_plugins: Plugins, tmp_path: Path) -> None:
    recorder = Recorder()
    plugins = load_plugins(extra=[toy_plugin, recorder])
    results = run_toy(plugins, tmp_path / "run", "data.target_subjects=[T00]", *extra, method=method)
    assert results["method"] == method
    assert 0.0 <= results["target_accuracy"] <= 1.0
    adapts = method not in ("source_only", "adabn")
    assert [s for s in recorder.steps if s[0] == "adapt"] == ([("adapt", "T00", 2), ("adapt", "T00", 4)] if adapts else [])
    n = results["per_subject"]["T00"]["n"]
    assert n == (9 if method == "target_supervised" else 18)
    assert (tmp_path / "run" / "subjects" / "T00" / "model.pt").is_file()
    # Before/after on the same images: a method that changes nothing on the target has no gain.
    v = results["per_subject"]["T00"]
    assert v["gain"] == pytest.approx(v["accuracy"] - v["source_accuracy"])
    if method == "source_only":
        assert v["gain"] == 0.0 and results["gain"] == 0.0


def test_training_never_reads_target_labels(toy_plugins: Plugins, tmp_path: Path) -> None:
    clean = run_toy(toy_plugins, tmp_path / "clean", "data.target_subjects=[T00]")
    plugins = load_plugins(extra=[toy_plugin, PoisonedPlugin()])
    poisoned = run_toy(plugins, tmp_path / "poisoned", "data.target_subjects=[T00]", "data.dataset={name: toy_poisoned}")
    # The poison is real: evaluation, which reads the labels, sees it ...
    assert poisoned["per_subject"]["T00"]["accuracy"] != clean["per_subject"]["T00"]["accuracy"]
    # ... while the adapted weights are bit for bit the same.
    assert_same_models(model_state(tmp_path / "clean" / "subjects" / "T00" / "model.pt"),
                       model_state(tmp_path / "poisoned" / "subjects" / "T00" / "model.pt"))


def test_target_supervised_does_read_target_labels(toy_plugins: Plugins, tmp_path: Path) -> None:
    # The counterpart of the test above: the same comparison detects a method that uses labels.
    extra = ("data.target_subjects=[T00]", "data.target_holdout=0.5")
    run_toy(toy_plugins, tmp_path / "clean", *extra, method="target_supervised")
    plugins = load_plugins(extra=[toy_plugin, PoisonedPlugin()])
    run_toy(plugins, tmp_path / "poisoned", *extra, "data.dataset={name: toy_poisoned}", method="target_supervised")
    with pytest.raises(AssertionError):
        assert_same_models(model_state(tmp_path / "clean" / "subjects" / "T00" / "model.pt"),
                           model_state(tmp_path / "poisoned" / "subjects" / "T00" / "model.pt"))


INTERRUPTIBLE = ("data.target_subjects=[T00]", "train.source_steps=20", "train.steps=20", "train.checkpoint_every=10",
                 "train.log_every=5", "train.deterministic=true")


@pytest.mark.parametrize("phase", ["source", "adapt"])
def test_interrupted_run_resumes_exactly(phase: str, toy_plugins: Plugins, tmp_path: Path) -> None:
    reference = run_toy(toy_plugins, tmp_path / "reference", *INTERRUPTIBLE)

    run_dir = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run_toy(load_plugins(extra=[toy_plugin, Interrupter(phase, 15)]), run_dir, *INTERRUPTIBLE)
    phase_dir = run_dir / ("source" if phase == "source" else "subjects/T00")
    assert [p.name for p in phase_dir.glob("ckpt-*.pt")] == ["ckpt-0000010.pt"]
    assert not (phase_dir / ("model.pt" if phase == "source" else "results.json")).exists()
    ckpt = torch.load(phase_dir / "ckpt-0000010.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 10 and ckpt["phase"] == phase

    recorder = Recorder()
    resumed = run_toy(load_plugins(extra=[toy_plugin, recorder]), run_dir, *INTERRUPTIBLE, resume=True)
    assert recorder.steps[0] == (phase, None if phase == "source" else "T00", 15)  # restarted after step 10
    assert resumed["per_subject"] == reference["per_subject"]
    assert_same_models(model_state(run_dir / "source" / "model.pt"), model_state(tmp_path / "reference" / "source" / "model.pt"))
    assert_same_models(model_state(run_dir / "subjects" / "T00" / "model.pt"),
                       model_state(tmp_path / "reference" / "subjects" / "T00" / "model.pt"))
    assert not list(phase_dir.glob("ckpt-*.pt"))


def test_image_batches_normalize_every_image_once_in_order() -> None:
    from facedapt.data.batches import gather, image_batches, normalize

    images = torch.arange(2 * 3 * 4 * 4).reshape(2 * 3, 1, 4, 4).remainder(256).to(torch.uint8)
    samples = Samples(images=images, expression=torch.zeros(6, dtype=torch.long), subject=torch.zeros(6, dtype=torch.long),
                      subject_ids=("A",), dataset="x")
    order = torch.tensor([5, 0, 3, 1, 4])
    batches = list(image_batches(samples, order, torch.device("cpu"), 2))
    assert [len(b) for b in batches] == [2, 2, 1]
    torch.testing.assert_close(torch.cat(batches), normalize(images[order]), rtol=0, atol=0)
    # Training batches go through the same normalization: [0, 255] -> [-1, 1].
    torch.testing.assert_close(gather(samples, order, torch.device("cpu")).images, torch.cat(batches), rtol=0, atol=0)
    assert normalize(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]
