"""`facedapt compare`: results.json files to mean/std tables, and the benchmark's use of it."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import benchmark_module

from facedapt import compare
from facedapt.cli import main
from facedapt.errors import UsageError


def result(method: str, seed: int, per_subject: dict[str, float], selection: str = "last",
           recipe: str | None = None) -> dict[str, Any]:
    accs = list(per_subject.values())
    return {"method": method, "recipe": recipe or method, "seed": seed, "selection": selection,
            "target_accuracy": statistics.fmean(accs),
            "target_accuracy_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
            "target_uar": statistics.fmean(accs) - 0.1,
            "per_subject": {sid: {"accuracy": a, "uar": a - 0.1, "macro_f1": a - 0.2, "n": 10}
                            for sid, a in per_subject.items()},
            "per_yaw": {"-30": 0.5, "0": 0.7}, "leakage": {"pose_from_expression": 0.4},
            "timing": {"per_subject_adapt": {sid: 2.0 for sid in per_subject}}}


def write(path: Path, data: dict, swept: dict | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(data))
    # A per-subject results.json inside the run is not a run of its own.
    sub = path / "subjects" / "X"
    sub.mkdir(parents=True, exist_ok=True)
    (sub / "results.json").write_text(json.dumps({"accuracy": 1.0, "n": 1}))
    if swept is not None:
        (path.parent / "job.json").write_text(json.dumps({"swept": swept}))


ACC = {("dann", 0): {"A": 0.6, "B": 0.8}, ("dann", 1): {"A": 0.5, "B": 0.9},
       ("pada", 0): {"A": 0.7, "B": 0.9}, ("pada", 1): {"A": 0.8, "B": 0.8}}


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    for (method, seed), subj in ACC.items():
        write(tmp_path / "runs" / f"{method}-{seed}", result(method, seed, subj))
    return tmp_path / "runs"


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """The same numbers as one job per (method, seed, subject), as `facedapt sweep` lays out."""
    for (method, seed), subj in ACC.items():
        for sid, acc in subj.items():
            write(tmp_path / "sweep" / f"{method}{seed}{sid}" / "run", result("pada", seed, {sid: acc}, recipe="pada"),
                  {"method.name": method, "seed": seed, "subject": sid})
    return tmp_path / "sweep"


def _expected(method: str) -> tuple[float, float, float]:
    seed_means = [statistics.fmean(ACC[(method, s)].values()) for s in (0, 1)]
    per_subject = [statistics.fmean(ACC[(method, s)][sid] for s in (0, 1)) for sid in ("A", "B")]
    return statistics.fmean(seed_means), statistics.stdev(seed_means), statistics.stdev(per_subject)


def test_mean_and_std_over_seeds_and_subjects(runs_dir: Path) -> None:
    keys, rows = compare.compare([runs_dir])
    assert keys == ["recipe", "method", "selection"]
    by = {r["key"]["method"]: r for r in rows}
    assert set(by) == {"dann", "pada"}
    for method, row in by.items():
        mean, std, spread = _expected(method)
        assert row["accuracy_mean"] == pytest.approx(mean)
        assert row["accuracy_std"] == pytest.approx(std)
        assert row["subject_std"] == pytest.approx(spread)
        assert row["seeds"] == 2 and row["subjects"] == 2 and row["runs"] == 2
        assert row["selection"] == ["last"]


def test_sweep_jobs_give_the_same_numbers_as_whole_runs(runs_dir: Path, sweep_dir: Path) -> None:
    _, whole = compare.compare([runs_dir], ["method"])
    keys, jobs = compare.compare([sweep_dir])
    assert keys == ["recipe", "method", "method.name", "selection"]  # the swept key is a column
    by_job = {r["key"]["method.name"]: r for r in jobs}
    for row in whole:
        other = by_job[row["key"]["method"]]
        for k in ("accuracy_mean", "accuracy_std", "uar_mean", "macro_f1_mean", "subject_std", "seeds", "subjects"):
            assert other[k] == pytest.approx(row[k]), k
        assert other["runs"] == 4


def test_formats_name_the_selection_rule(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for fmt, marker in (("md", "| recipe | method |"), ("latex", r"\begin{tabular}"), ("csv", "recipe,method,")):
        assert main(["compare", str(runs_dir), "--format", fmt]) == 0
        out = capsys.readouterr().out
        assert marker in out, fmt
        assert "selection rule" in out and "last" in out, fmt
    mean, std, _ = _expected("pada")
    assert main(["compare", str(runs_dir), "--by", "method"]) == 0
    out = capsys.readouterr().out
    assert f"| pada | last | 2 | 2 | {100 * mean:.1f} ± {100 * std:.1f} |" in out
    assert main(["compare", str(runs_dir), "--format", "latex"]) == 0
    assert r"$\pm$" in capsys.readouterr().out


def test_mixed_and_oracle_selection_are_flagged(tmp_path: Path) -> None:
    write(tmp_path / "a", result("pada", 0, {"A": 0.5}))
    write(tmp_path / "b", result("pada", 0, {"A": 0.9}, selection="oracle"))
    keys, rows = compare.compare([tmp_path])
    assert len(rows) == 2  # selection is a grouping key: never averaged together
    text = compare.render(keys, rows, "md")
    assert "`last`, `oracle`" in text and "upper bound" in text and "differ in selection rule" in text


def test_no_results_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no results.json"):
        compare.compare([tmp_path])
    with pytest.raises(UsageError, match="no such file"):
        compare.compare([tmp_path / "missing"])


def test_benchmark_table_comes_from_the_library() -> None:
    bench = benchmark_module("compare")
    results = {m: [result(m, s, ACC[("dann" if m == "source_only" else "pada", s)]) for s in (0, 1)]
               for m in ("source_only", "pada")}
    for m, runs in results.items():  # before/after on each row's own source model
        for r in runs:
            for v in r["per_subject"].values():
                v["source_accuracy"], v["gain"] = 0.5, v["accuracy"] - 0.5
    report = bench.summarize(results, 2, [0, 1], [], 60.0)
    mean, std, _ = _expected("pada")
    row = report["rows"]["pada"]
    assert row["accuracy_mean"] == pytest.approx(mean) and row["accuracy_std"] == pytest.approx(std)
    assert set(row["pairs"]) == {"0/A", "0/B", "1/A", "1/B"}  # every (seed, person) result is kept
    assert row["paired"]["source_only"]["mean"] == pytest.approx(mean - _expected("dann")[0])
    assert row["gain"]["worst"] == pytest.approx(0.2) and report["goal"]["no_person_below_3_points"]
    assert row["source_model"] == "its own (per seed)"
    text = bench.render(report)
    assert "selection rule `last`" in text and "Per yaw" in text and "Goal check" in text
    assert f"{100 * mean:.1f} ± {100 * std:.1f}" in text and "vs source-only" in text


def test_benchmark_goal_checks_each_strategy_and_the_probe() -> None:
    bench = benchmark_module("compare")
    people = {f"P{i}": 0.6 + 0.01 * i for i in range(6)}

    def runs(shift: float, probe: float, jitter: float = 0.0) -> list[dict]:
        out = []
        for seed in (0, 1):
            r = result("x", seed, {k: v + shift + (jitter if i % 2 else -jitter) for i, (k, v) in enumerate(people.items())})
            r["leakage"], r["leakage_chance"] = {"pose_from_expression": probe}, {"pose_from_expression": 0.2}
            out.append(r)
        return out

    # The cross terms: +5 points every time and pose halved towards chance (0.5 -> 0.3, bar 0.35);
    # reconstruction: +1 point on average, but as often behind as ahead.
    results = {"pada": runs(0.05, 0.3), "pada_no_cross": runs(0.0, 0.5),
               "pada_no_reconstruction": runs(0.04, 0.3, jitter=0.05)}
    g = bench.summarize(results, 6, [0, 1], [], 1.0)["goal"]
    assert g["strategies"]["pada_no_cross"]["met"] and not g["strategies"]["pada_no_reconstruction"]["met"]
    assert g["probe"]["bar"] == pytest.approx(0.35) and g["probe"]["met"]
    results["pada"] = runs(0.05, 0.4)  # pose only a quarter of the way to chance
    report = bench.summarize(results, 6, [0, 1], [], 1.0)
    assert not report["goal"]["probe"]["met"]
    assert "cross-adversarial terms" in bench.render(report) and "goal at most 35.0%" in bench.render(report)
    # Each effect also per seed: the cross terms +5 points at both seeds.
    assert report["ablation_effects"]["pada_no_cross"]["per_seed"] == pytest.approx({"0": 0.05, "1": 0.05})
    assert "cross-adversarial terms: +5.0 [" in bench.render(report) and "; seeds +5.0 / +5.0" in bench.render(report)
    results["pada"] = runs(-0.05, 0.3)  # the probe's goal reached at a cost in accuracy
    assert not bench.summarize(results, 6, [0, 1], [], 1.0)["goal"]["probe"]["met"]


def test_benchmark_baseline_trains_its_own_source_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each row of the benchmark is a run of its own recipe: a baseline's source model is its
    own (trained by that recipe, never loaded from the pose-aware run)."""
    bench = benchmark_module("compare")
    tiny = ["data.dataset={name: synthetic, preset: tiny}", "data.augment=[]", "model.backbone.width=8",
            "train.precision=fp32", "train.source_steps=4", "train.steps=2", "train.batch_size=8",
            "train.eval_every=0", "train.checkpoint_every=0", "eval.probe_steps=2"]
    monkeypatch.setattr(bench, "configuration", lambda full: {"targets": 2, "seeds": 1, "overrides": tiny})
    work, out = tmp_path / "work", tmp_path / "out" / "compare"
    monkeypatch.setattr(sys, "argv", ["compare.py", "--rows", "source_only", "pada", "--jobs", "1",
                                      "--workdir", str(work), "--out", str(out)])
    bench.main()
    for row in ("source_only", "pada"):
        recipe = yaml.safe_load((work / "seed0" / row / "recipe.yaml").read_text())
        assert recipe["train"].get("init_from") is None and recipe["train"]["source_steps"] == 4
        assert recipe["data"]["dataset"]["seed"] == 0 and recipe["data"]["target_holdout"] == 0.5
        saved = torch.load(work / "seed0" / row / "source" / "model.pt", weights_only=True)
        assert saved["method"] == row and saved["kind"] == "source"
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["rows"]["pada"]["pairs"]) == {"0/S001", "0/S002"}
    assert report["rows"]["pada"]["paired"]["source_only"]["n"] == 2
    assert all("source_accuracy" in v for v in report["rows"]["source_only"]["pairs"].values())


def test_benchmark_seeds_draw_new_people() -> None:
    bench = benchmark_module("compare")
    jobs = bench.plan(["source_only", "pada"], [0, 1], 8, [], Path("w"))
    seeds = {(row, seed): ov for row, seed, _dir, ov, _base in jobs}
    assert "data.dataset.seed=0" in seeds[("pada", 0)] and "data.dataset.seed=1" in seeds[("pada", 1)]
    assert all(not any(o.startswith("train.init_from") for o in ov) for ov in seeds.values())
    assert bench.DEV_DATASET_SEED not in range(0, 100)


def test_paired_difference_against_a_hand_computed_example() -> None:
    from facedapt.stats import paired, t_quantile

    # Differences 0.01, 0.02, 0.04 (pair "2/c" exists in only one row and is left out): mean
    # 0.02333, sample sd 0.015275, t(0.975, 2) = 4.3027, half-width 0.037946.
    a = {"0/a": 0.51, "0/b": 0.62, "1/a": 0.44, "2/c": 0.9}
    b = {"0/a": 0.50, "0/b": 0.60, "1/a": 0.40}
    p = paired(a, b)
    assert p["n"] == 3 and p["improved"] == 3 and p["method"] == "paired t"
    assert p["mean"] == pytest.approx(0.0233333, abs=1e-6)
    assert p["ci95"] == pytest.approx([0.0233333 - 0.037946, 0.0233333 + 0.037946], abs=1e-5)
    assert t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(0.975, 23) == pytest.approx(2.0687, abs=1e-4)
    assert t_quantile(0.025, 9) == pytest.approx(-2.2622, abs=1e-4)
    assert paired(b, a)["improved"] == 0
    assert p["per_seed"] == pytest.approx({"0": 0.015, "1": 0.04})
    assert "per_seed" not in paired({"a": 0.5, "b": 0.6}, {"a": 0.4, "b": 0.4})  # no seeds in the keys


def test_compare_pairs_rows_by_seed_and_subject(runs_dir: Path, sweep_dir: Path) -> None:
    from facedapt.stats import paired

    for path, key in ((runs_dir, "method"), (sweep_dir, "method.name")):
        keys, rows = compare.compare([path], [key], against=["dann"])
        by = {r["key"][key]: r for r in rows}
        assert set(by["pada"]["pairs"]) == {"0/A", "0/B", "1/A", "1/B"}
        want = paired({f"{s}/{k}": v for (m, s), d in ACC.items() if m == "pada" for k, v in d.items()},
                      {f"{s}/{k}": v for (m, s), d in ACC.items() if m == "dann" for k, v in d.items()})
        got = by["pada"]["paired"]["dann"]
        assert got["mean"] == pytest.approx(0.1) and got["improved"] == 3 and got["n"] == 4
        assert got["ci95"] == pytest.approx(want["ci95"])
        assert "dann" not in by["dann"]["paired"]  # never against itself
        table = compare.render(keys, rows)
        assert "vs dann" in table and "+10.0 [" in table
    with pytest.raises(UsageError, match="--against cdan: no group"):
        compare.compare([runs_dir], ["method"], against=["cdan"])
