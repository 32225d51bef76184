"""`facedapt compare`: results.json files to mean/std tables, and the benchmark's use of it."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
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
    return statistics.fmean(seed_means), statistics.pstdev(seed_means), statistics.pstdev(per_subject)


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


def test_benchmark_table_comes_from_the_library(tmp_path: Path) -> None:
    bench = benchmark_module("compare")
    results = {m: [result(m, s, ACC[("dann" if m == "source_only" else "pada", s)]) for s in (0, 1)]
               for m in ("source_only", "pada")}
    report = bench.summarize(results, 2, 1, 2, [], 60.0)
    mean, std, _ = _expected("pada")
    assert report["rows"]["pada"]["accuracy_mean"] == pytest.approx(mean)
    assert report["rows"]["pada"]["accuracy_std"] == pytest.approx(std)
    assert report["goal"]["mean_gain_over_source_only"] == pytest.approx(mean - _expected("dann")[0])
    text = bench.render(report)
    assert "selection rule `last`" in text and "Per target subject" in text and "Goal check" in text
    assert f"{100 * mean:.1f} ± {100 * std:.1f}" in text
