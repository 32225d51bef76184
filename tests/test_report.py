"""The run report: report.md, report.html and plots at the end of every run, features.pt per
target, and `facedapt report` rebuilding it; on the toy faces with a few steps."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import facedapt_plugins.report as report_plugin
import pytest
import torch
from conftest import PADA, WRITE_REPORT, run_toy, toy_recipe
from loguru import logger

from facedapt.cli import main
from facedapt.data.samples import Samples
from facedapt.data.splits import Domain
from facedapt.engine import features as engine_features
from facedapt.plugin_manager import Plugins

PLOTS = ("training_curves.png", "confusion.png", "per_subject.png", "per_yaw.png", "features.png")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, toy_plugins: Plugins) -> Path:
    run_dir = tmp_path_factory.mktemp("report") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_plugin, "write_report", WRITE_REPORT)  # this run must write its report
        run_toy(toy_plugins, run_dir, "data.target_subjects=[T00, T01]")
    return run_dir


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() points loguru at the captured stderr; give later tests a working sink again."""
    yield
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message))


def check_report(run_dir: Path) -> None:
    for name in PLOTS:
        png = run_dir / "report" / name
        assert png.is_file(), name
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 2000, name
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    for name in PLOTS:
        assert f'src="report/{name}"' in page
    assert "<script" not in page.lower()
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    for name in PLOTS:
        assert f"(report/{name})" in md


def test_run_writes_report(finished: Path) -> None:
    check_report(finished)
    results = json.loads((finished / "results.json").read_text(encoding="utf-8"))
    md = (finished / "report.md").read_text(encoding="utf-8")
    page = (finished / "report.html").read_text(encoding="utf-8")
    assert "| subject | accuracy | uar | macro_f1 | before | gain (points) | n |" in md
    for sid, v in results["per_subject"].items():
        # Before/after: the source model's accuracy on the same images, and the change.
        assert v["gain"] == pytest.approx(v["accuracy"] - v["source_accuracy"])
        row = (f"| {sid} | {v['accuracy']:.4f} | {v['uar']:.4f} | {v['macro_f1']:.4f} | {v['source_accuracy']:.4f} | "
               f"{100 * v['gain']:+.1f} | {v['n']} |")
        assert row in md, row
        assert f"<td>{sid}</td><td>{v['accuracy']:.4f}</td>" in page
    mean = f"{results['target_accuracy']:.4f} ± {results['target_accuracy_std']:.4f}"
    assert f"| target accuracy | {mean} |" in md
    assert results["source_accuracy"] == pytest.approx(
        sum(v["source_accuracy"] for v in results["per_subject"].values()) / len(results["per_subject"]))
    assert f"| before adaptation (source model, same images) | {results['source_accuracy']:.4f} |" in md
    assert f"| gain (points) | {100 * results['gain']:+.1f};" in md
    for yaw in results["per_yaw"]:  # the per-yaw table, signed degrees
        assert f"| {int(yaw):+d}°" in md or (yaw == "0" and "| 0° |" in md)
    for probe in results["leakage"]:
        assert f"| {probe} |" in md
    # The resolved recipe, verbatim, and the environment's versions.
    assert (finished / "recipe.yaml").read_text(encoding="utf-8").strip() in md
    env = json.loads((finished / "environment.json").read_text(encoding="utf-8"))
    assert f"| torch | {env['versions']['torch']} |" in md


def test_features_file(finished: Path) -> None:
    for sid in ("T00", "T01"):
        feats = torch.load(finished / "subjects" / sid / "features.pt", map_location="cpu", weights_only=True)
        res = json.loads((finished / "subjects" / sid / "results.json").read_text(encoding="utf-8"))
        n = res["n"]
        assert feats["expression_2d"].shape == (n, 2) and feats["expression_2d"].dtype == torch.float32
        assert feats["expression"].shape == (n,) and feats["expression"].dtype == torch.int64
        assert feats["yaw"].shape == (n,) and feats["yaw"].dtype == torch.float32
        assert torch.isfinite(feats["expression_2d"]).all()
        # The same images the engine scored: label counts are the confusion matrix's row sums.
        counts = torch.bincount(feats["expression"], minlength=len(res["confusion"]))
        assert counts.tolist() == [sum(row) for row in res["confusion"]]
        assert set(feats["yaw"].tolist()) <= {-30.0, 0.0, 30.0}


def test_features_are_capped_and_leave_the_random_stream_alone(tmp_path: Path) -> None:
    n = engine_features.FEATURE_POINTS + 500
    samples = Samples(images=torch.zeros(n, 1, 4, 4, dtype=torch.uint8), expression=torch.arange(n) % 3,
                      subject=torch.zeros(n, dtype=torch.long), subject_ids=("A",), dataset="x",
                      yaw=(torch.arange(n) % 3 - 1).float() * 30)
    out = {"pred": torch.zeros(n, dtype=torch.long), "feat_expression": torch.randn(n, 16)}
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    engine_features.save_features(tmp_path / "features.pt", out, Domain(samples, torch.arange(n)), seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    feats = torch.load(tmp_path / "features.pt", weights_only=True)
    assert feats["expression_2d"].shape == (engine_features.FEATURE_POINTS, 2)
    assert feats["expression"].shape == feats["yaw"].shape == (engine_features.FEATURE_POINTS,)
    # Without expression features (a method that has none) nothing is written.
    engine_features.save_features(tmp_path / "none.pt", {"pred": out["pred"]}, Domain(samples, torch.arange(n)), seed=1)
    assert not (tmp_path / "none.pt").exists()


def test_cli_rebuilds_report(finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy, ignore=shutil.ignore_patterns("model.pt"))
    (copy / "report.md").unlink()
    (copy / "report.html").unlink()
    shutil.rmtree(copy / "report")
    assert main(["-q", "report", str(copy)]) == 0
    assert "report.html" in capsys.readouterr().out
    check_report(copy)
    # Without features.pt (a run from before it existed) the projection is left out, the rest stays.
    for f in (copy / "subjects").glob("*/features.pt"):
        f.unlink()
    assert main(["-q", "report", str(copy)]) == 0
    assert not (copy / "report" / "features.png").exists()
    assert "features.png" not in (copy / "report.html").read_text(encoding="utf-8")
    assert (copy / "report" / "confusion.png").is_file()


@pytest.mark.parametrize("what", ["empty", "unfinished", "missing"])
def test_cli_report_needs_a_finished_run(what: str, finished: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "d"
    if what != "missing":
        target.mkdir()
    if what == "unfinished":
        shutil.copy(finished / "recipe.yaml", target / "recipe.yaml")
    assert main(["-q", "report", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("facedapt: error:") and str(target) in err, err


def test_report_failure_only_warns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import facedapt.report

    def broken(run_dir: Path) -> Path:
        raise RuntimeError("no plots today")

    monkeypatch.setattr(facedapt.report, "build_report", broken)
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING")
    try:
        WRITE_REPORT(tmp_path)  # must not raise
    finally:
        logger.remove(sink)
    assert len(lines) == 1 and "no plots today" in lines[0] and "facedapt report" in lines[0]


# -- switches: the recipe's eval.report, the command line's --report/--no-report, -q ------------


def test_eval_report_false_or_the_runner_argument_skip_the_report(reports: None, toy_plugins: Plugins,
                                                                   tmp_path: Path) -> None:
    from facedapt.engine.run import Runner

    run_toy(toy_plugins, tmp_path / "off", "data.target_subjects=[T00]", "eval.report=false")
    assert (tmp_path / "off" / "results.json").is_file() and not (tmp_path / "off" / "report.md").exists()
    # The argument (what --report/--no-report pass) wins over the recipe.
    Runner(toy_recipe("data.target_subjects=[T00]"), run_dir=tmp_path / "arg", plugins=toy_plugins,
           report=False).execute()
    assert not (tmp_path / "arg" / "report.md").exists()


@pytest.mark.parametrize(("command", "module", "function", "argv"), [
    ("run", "facedapt.engine.run", "run", ["run", str(PADA)]),
    ("adapt", "facedapt.engine.adapt", "adapt", ["adapt", "--from", "{tmp}", "--images", "{tmp}"]),
    ("sweep", "facedapt.sweep", "run_sweep", ["sweep", str(PADA), "--sweep-dir", "{tmp}/s"]),
])
def test_report_and_progress_switches_reach_the_engine(command: str, module: str, function: str, argv: list[str],
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    seen: list[dict] = []

    def probe(*args: object, **kwargs: object) -> None:
        seen.append(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(importlib.import_module(module), function, probe)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    default = None if command != "sweep" else False  # sweep jobs skip reports unless asked
    for extra, report in (([], default), (["--no-report"], False), (["--report"], True)):
        seen.clear()
        with pytest.raises(SystemExit):
            main([*argv, *extra])
        assert seen[0]["report"] is report, (command, extra)
    if command != "sweep":  # the jobs of a sweep run quiet in any case
        for quiet, progress in (([], None), (["-q"], False)):
            seen.clear()
            with pytest.raises(SystemExit):
                main([*quiet, *argv])
            assert seen[0]["progress"] is progress, (command, quiet)
