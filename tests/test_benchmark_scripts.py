"""The benchmark scripts' own logic: the step harness trains, the goal arithmetic, the docs paste."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import benchmark_module


def test_harness_step_is_a_training_step() -> None:
    harness = benchmark_module("_harness")
    tiny = ["data.dataset={name: synthetic, preset: tiny}", "data.augment=[]"]
    bench = harness.Bench("dann", harness.recipe_overrides("fp32", False, batch=8, extra=tiny))
    assert bench.phase == "adapt" and bench.images_per_step == 16
    before = {k: v.clone() for k, v in bench.method.models["backbone"].state_dict().items()}
    times = harness.timed_steps(bench, 2)
    assert len(times) == 2 and all(wall > 0 and cpu >= 0 for wall, cpu in times)
    after = bench.method.models["backbone"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the step updated the weights
    stats = harness.interleaved({"a": bench}, rounds=2, steps=1, warmup=0, progress=False)
    assert stats["a"]["n"] == 2 and stats["a"]["img_per_s"] == pytest.approx(16 / stats["a"]["step_s"], rel=0.01)


def test_warm_start_goal_arithmetic() -> None:
    ws_mod = benchmark_module("warm_start")
    ws = {"source_steps": 600, "schedules": [{"adapt_steps": n, "accuracy_fraction": a}
                                             for n, a in ((100, 0.99), (300, 0.99), (50, 0.97))]}
    ws_mod.time_fractions(ws, {"source": {"cpu_step_s": 0.3}, "adapt": {"cpu_step_s": 0.5}})
    fractions = [r["time_fraction"] for r in ws["schedules"]]
    # from scratch = source training + the same adaptation; warm = the adaptation alone
    assert fractions == pytest.approx([50 / 230, 150 / 330, 25 / 205])
    assert [r["meets_goal"] for r in ws["schedules"]] == [True, False, False]  # too slow; too inaccurate


def test_docs_paste_replaces_only_the_marked_sections(tmp_path: Path) -> None:
    harness = benchmark_module("_harness")
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- speed:start -->\nold\n<!-- speed:end -->\nmiddle\n"
                    "<!-- warm_start:start -->\nold\n<!-- warm_start:end -->\nend\n")
    results = tmp_path / "results"
    results.mkdir()
    (results / "speed.md").write_text("| new table |\n")
    harness.update_docs(page, results)
    text = page.read_text()
    assert "<!-- speed:start -->\n| new table |\n<!-- speed:end -->" in text
    assert "No warm-start results yet" in text and "old" not in text  # absent file: says how to make it
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("end\n")


def test_main_job_timing_runs_the_job_as_the_cpu_kind_asks(tmp_path: Path) -> None:
    """The avx2 kind runs fp32 under oneDNN's AVX2 limit, and records time and the before/after."""
    job = benchmark_module("main_job")
    tiny = ["data.dataset={name: synthetic, preset: tiny}", "data.target_subjects={first: 1}",
            "train.source_steps=2", "train.steps=2", "train.batch_size=8", "eval.leakage_probe=false"]
    row = job.run_kind("avx2", str(Path(job.ROOT) / "recipes" / "pada.yaml"), tmp_path, tiny)
    assert row["precision"] == "fp32" and row["env"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert row["wall_s"] > 0 and row["cpu_s"] > 0 and {"data", "source", "adapt", "total"} <= set(row["timing"])
    assert row["gain"] == pytest.approx(row["accuracy"] - row["source_accuracy"]) and row["targets"] == 1
    assert (tmp_path / "avx2" / "results.json").is_file() and row["summary"][0].startswith("target accuracy")
    assert "| avx2 | fp32 |" in job.table([row])


def test_strategy_table_turns_off_only_what_costs_on_both_protocols(tmp_path: Path) -> None:
    strategies = benchmark_module("strategies")

    def effect(mean: float, low: float, high: float) -> dict:
        return {"mean": mean, "ci95": [low, high], "n": 24, "improved": 10}

    default = {"ablation_effects": {"pada_no_cross": effect(-0.03, -0.05, -0.01),
                                    "pada_no_reconstruction": effect(-0.03, -0.05, -0.01),
                                    "pada_no_pose": effect(0.02, 0.01, 0.03)}, "seeds": [0, 1, 2], "targets": 8}
    shift = {"ablation_effects": {"pada_no_cross": effect(-0.02, -0.04, -0.005),
                                  "pada_no_reconstruction": effect(0.01, -0.01, 0.03),
                                  "pada_no_pose": effect(-0.02, -0.04, -0.01),
                                  "pada_no_pose_warp": effect(0.02, 0.005, 0.035)}, "seeds": [0, 1, 2], "targets": 8}
    (tmp_path / "compare.json").write_text(json.dumps(default))
    (tmp_path / "compare-pose_shift.json").write_text(json.dumps(shift))
    table = strategies.main(["--results", str(tmp_path)])
    assert table["pada_no_cross"]["verdicts"] == {"default": "costs", "pose shift": "costs"}
    assert [r for r, t in table.items() if t["off_by_default"]] == ["pada_no_cross"]
    assert table["pada_no_reconstruction"]["verdicts"] == {"default": "costs", "pose shift": "not shown"}
    assert table["pada_no_pose"]["verdicts"] == {"default": "helps", "pose shift": "costs"}
    assert table["pada_no_pose_warp"]["verdicts"] == {"default": "not measured", "pose shift": "helps"}
    assert "off by default: cross-adversarial terms." in (tmp_path / "strategies.md").read_text()


def test_strategy_choice_needs_more_than_one_standard_error_over_the_current_recipe() -> None:
    choose = benchmark_module("choose_strategies").choose

    def cand(label: str, gains: list[float]) -> dict:
        return {"label": label, "accuracy": 0.5 + sum(gains) / len(gains),
                "per_person": {f"S{i}": 0.5 + g for i, g in enumerate(gains)}}

    current = cand("current", [0.0] * 4)
    noisy = cand("noisy", [0.08, -0.06, 0.07, -0.05])  # +1 point, SE 3.6: noise
    steady = cand("steady", [0.02, 0.03, 0.02, 0.03])  # +2.5 points, SE 0.3
    bigger = cand("bigger", [0.05, 0.04, 0.06, 0.05])  # +5 points, SE 0.4
    assert choose(current, [noisy]) is None
    assert choose(current, [noisy, steady])["label"] == "steady"
    assert choose(current, [steady, bigger, noisy])["label"] == "bigger"
    assert choose(current, [cand("worse", [-0.02, -0.03, -0.02, -0.03])]) is None


def test_cost_and_disentanglement_choices_keep_accuracy_within_one_standard_error() -> None:
    choose = benchmark_module("choose_strategies").choose

    def cand(label: str, gains: list[float], probe: float = 0.5) -> dict:
        return {"label": label, "accuracy": 0.5 + sum(gains) / len(gains), "pose_from_expression": probe,
                "per_person": {f"S{i}": 0.5 + g for i, g in enumerate(gains)}}

    current = cand("current", [0.0] * 4)
    worse = cand("50 steps", [-0.02, -0.03, -0.02, -0.03])  # -2.5 points, SE 0.3: behind
    level = cand("100 steps", [0.01, -0.01, 0.02, -0.01])  # within noise
    assert choose(current, [worse, level], "cheaper")["label"] == "100 steps"
    assert choose(current, [worse], "cheaper") is None
    assert choose(current, [level, worse], "cheaper")["label"] == "100 steps"
    assert choose(current, [cand("own trunk", [0.01, -0.01, 0.02, -0.01], probe=0.3)], "disentangling")["label"] == "own trunk"
    assert choose(current, [cand("leaky", [0.01, -0.01, 0.02, -0.01], probe=0.6)], "disentangling") is None
    assert choose(current, [cand("costly", [-0.02, -0.03, -0.02, -0.03], probe=0.1)], "disentangling") is None


def test_several_development_seeds_pool_every_seed_person_pair() -> None:
    cs = benchmark_module("choose_strategies")

    def res(accs: list[float], probe: float | None = 0.3) -> dict:
        return {"target_accuracy": sum(accs) / len(accs), "source_accuracy": 0.4,
                "leakage": {} if probe is None else {"pose_from_expression": probe},
                "per_subject": {f"S{i}": {"accuracy": a} for i, a in enumerate(accs)}}

    current = {"label": "current", **cs.pooled([res([0.5] * 4), res([0.5] * 4)], [1000, 1001])}
    # Its own source model helped at the first seed and hurt at the second: a draw, not a setting.
    drawn = {"label": "own model", **cs.pooled([res([0.53, 0.54, 0.53, 0.54]), res([0.47, 0.46, 0.47, 0.46])],
                                               [1000, 1001])}
    assert sorted(drawn["per_person"]) == ["1000/S0", "1000/S1", "1000/S2", "1000/S3",
                                           "1001/S0", "1001/S1", "1001/S2", "1001/S3"]
    assert drawn["accuracy"] == pytest.approx(0.5) and drawn["pose_from_expression"] == pytest.approx(0.3)
    assert cs.choose(current, [drawn]) is None
    # The first seed alone cannot tell the draw from a gain.
    one = {"label": "current", **cs.pooled([res([0.5] * 4)], [1000])}
    first = {"label": "own model", **cs.pooled([res([0.53, 0.54, 0.53, 0.54])], [1000])}
    assert sorted(first["per_person"]) == ["S0", "S1", "S2", "S3"]
    assert cs.choose(one, [first])["label"] == "own model"
    # A probe missing at any seed is missing, not averaged over the seeds that have it.
    assert cs.pooled([res([0.5] * 4), res([0.5] * 4, probe=None)], [1000, 1001])["pose_from_expression"] is None


def test_every_candidate_of_the_strategies_choice_is_a_valid_pada_recipe() -> None:
    import facedapt
    from facedapt.plugin_manager import get_plugins
    from facedapt.recipe.validate import validate

    cs = benchmark_module("choose_strategies")
    recipe = str(cs.ROOT / "recipes" / "pada.yaml")
    assert set(cs.RULES) <= {s for r in cs.ROUNDS.values() for s in r}, "a rule names no setting"
    for settings in cs.ROUNDS.values():
        for candidates in settings.values():
            for ov in candidates.values():
                loaded = facedapt.load_recipe(recipe, [*cs.PROTOCOLS["pose_shift"], *ov])
                validate(loaded, get_plugins())  # raises on an unknown key or argument
    widths = [facedapt.load_recipe(recipe, ov).recipe.model for ov in cs.ROUNDS[4]["pose backbone width"].values()]
    assert [m["pose_backbone"].kwargs["width"] for m in widths] == [8, 16]  # cheapest first
