"""Sweeps: expansion into hash-named job directories, the local launcher (skip finished jobs,
rerun broken ones), SLURM jobs prepared without a cluster, and `facedapt compare` on a sweep."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PADA, ROOT, TOY, make_distribution

from facedapt import sweep
from facedapt.cli import main
from facedapt.errors import UsageError
from facedapt.recipe.load import load_recipe

TOY_DIST = "from toy_plugin import ToyFaces, facedapt_register_datasets\n"
#: Short jobs: the toy recipe without the probe; each job is one `facedapt run` subprocess.
FAST = (*TOY, "train.source_steps=2", "train.steps=2", "eval.leakage_probe=false")


@pytest.fixture
def toy_site(site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The toy dataset as an installed distribution, here and in the job subprocesses."""
    make_distribution(site, "fd_toy", "0.1", "fd_toy", TOY_DIST, {"toy": "fd_toy"})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return site


def test_split_values_keeps_brackets_together() -> None:
    assert sweep.split_values("a, b,{x: 1, y: 2},[1,2],'c,d'") == ["a", "b", "{x: 1, y: 2}", "[1,2]", "'c,d'"]
    assert sweep.parse_grid(["method.name=dann,cdan", "train.steps=2,4"]) == {
        "method.name": ["dann", "cdan"], "train.steps": ["2", "4"]}
    with pytest.raises(UsageError, match="key=v1,v2"):
        sweep.parse_grid(["method.name"])
    assert sweep.parse_seeds("3") == [0, 1, 2] and sweep.parse_seeds("0,5") == [0, 5]
    with pytest.raises(UsageError):
        sweep.parse_seeds("x")


def test_plan_makes_one_job_per_combination(toy_site: Path, tmp_path: Path) -> None:
    grid = {"method.name": ["dann", "source_only"]}
    jobs = sweep.plan(PADA, tmp_path / "sw", [*FAST, "data.target_subjects={first: 2}"], grid, [0, 1], "all")
    assert len(jobs) == 2 * 2 * 2
    combos = {(j.swept["method.name"], j.swept["seed"], j.swept["subject"]) for j in jobs}
    assert combos == {(m, s, t) for m in ("dann", "source_only") for s in (0, 1) for t in ("T00", "T01")}
    for job in jobs:
        assert job.directory.name == job.loaded.digest  # named by the hash of the resolved recipe
        written = load_recipe(job.directory / "recipe.yaml")
        assert written.resolved == job.loaded.resolved and written.digest == job.directory.name
        assert written.resolved["data"]["target_subjects"] == [job.swept["subject"]]
        assert written.resolved["seed"] == job.swept["seed"]
        assert json.loads((job.directory / "job.json").read_text())["swept"] == job.swept
    info = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert len(info["jobs"]) == 8 and info["grid"] == grid
    # The same plan again names the same directories; explicit subjects skip the data.
    again = sweep.plan(PADA, tmp_path / "sw", [*FAST, "data.target_subjects={first: 2}"], grid, [0, 1], "all")
    assert [j.directory for j in again] == [j.directory for j in jobs]
    one = sweep.plan(PADA, tmp_path / "sw2", list(FAST), None, [3], ["T05"])
    assert [(j.swept["seed"], j.swept["subject"]) for j in one] == [(3, "T05")]


def test_local_sweep_skips_done_jobs_and_reruns_broken_ones(toy_site: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    sweep_dir = tmp_path / "sw"
    argv = ["sweep", str(PADA), *FAST, "--grid", "method.name=source_only,dann", "--subjects", "T00",
            "--seeds", "1", "--sweep-dir", str(sweep_dir), "--parallel", "2"]
    assert main(argv) == 0, capsys.readouterr().err
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert len(jobs) == 2
    for job in jobs:
        assert (job / sweep.DONE).is_file() and (job / "run" / "results.json").is_file()
        assert not (job / "run" / "report.md").exists()  # jobs run with --no-report unless sweep --report
    # Break one job as a killed run leaves it: started (run/recipe.yaml), no results, no DONE.
    broken, finished = jobs
    (broken / sweep.DONE).unlink()
    (broken / "run" / "results.json").unlink()
    (broken / "run" / "subjects" / "T00" / "results.json").unlink()
    assert main(argv) == 0
    assert (broken / sweep.DONE).is_file()
    assert (broken / "job.log").read_text().count("$ ") == 2 and "--resume" in (broken / "job.log").read_text()
    assert (finished / "job.log").read_text().count("$ ") == 1  # skipped
    out = capsys.readouterr().out
    assert "1 already done" in out

    # The sweep's comparison table: one row per method, the selection rule named.
    assert main(["compare", str(sweep_dir), "--format", "md"]) == 0
    table = capsys.readouterr().out
    assert "Model selection rule: `last`" in table
    rows = [ln for ln in table.splitlines() if ln.startswith("| pada |")]
    assert {r.split("|")[2].strip() for r in rows} == {"source_only", "dann"}
    assert "method.name" in table.splitlines()[2]


def test_failed_job_gets_no_done_marker(toy_site: Path, tmp_path: Path) -> None:
    jobs = sweep.plan(PADA, tmp_path / "sw", [*FAST, "data.dataset={name: toy, subjects: 1}"], None, [0], ["T00"])
    counts = sweep.launch_local(jobs)
    assert counts["failed"] == 1 and not jobs[0].done
    assert "error" in (jobs[0].directory / "job.log").read_text()


class FakeExecutor:
    """Records what would be submitted (the interface of submitit's executors that we use)."""

    def __init__(self) -> None:
        self.submitted: list[tuple[Any, tuple]] = []
        self.batched = False

    def batch(self) -> Any:
        outer = self

        class Ctx:
            def __enter__(self) -> None:
                outer.batched = True

            def __exit__(self, *exc: object) -> None:
                pass

        return Ctx()

    def submit(self, fn: Any, *args: Any) -> Any:
        self.submitted.append((fn, args))
        return type("J", (), {"job_id": str(len(self.submitted))})()


def test_slurm_submits_only_unfinished_jobs_as_one_array(toy_site: Path, tmp_path: Path) -> None:
    jobs = sweep.plan(PADA, tmp_path / "sw", list(FAST), {"method.name": ["dann", "cdan"]}, [0], ["T00"])
    (jobs[0].directory / sweep.DONE).write_text("done\n")
    ex = FakeExecutor()
    handles = sweep.launch_slurm(jobs, ex, threads=2)
    assert ex.batched and len(handles) == 1
    assert ex.submitted == [(sweep.execute_job, (str(jobs[1].directory), 2, False))]


def test_slurm_job_script_prepared_without_a_cluster(toy_site: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    submitit = pytest.importorskip("submitit", reason="the optional extra facedapt[slurm] is not installed")
    from submitit.slurm import slurm

    # submitit refuses to build a SLURM executor where no `srun` exists: pretend there is one.
    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    executor = sweep.slurm_executor(tmp_path / "slurm", partition="gpu", time_min=30, gpus_per_node=1,
                                    cpus_per_task=8, mem_gb=32)
    text = executor._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=30", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB"):
        assert line in text, line
    # What SLURM would run: execute_job and the job directory, pickled as submitit does.
    jobs = sweep.plan(PADA, tmp_path / "sw", list(FAST), None, [0], ["T00"])
    delayed = submitit.helpers.DelayedSubmission(sweep.execute_job, str(jobs[0].directory), 1)
    restored = pickle.loads(pickle.dumps(delayed))
    assert restored.function is sweep.execute_job and restored.args == (str(jobs[0].directory), 1)


def test_slurm_launcher_without_submitit_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import builtins

    real = builtins.__import__

    def no_submitit(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "submitit":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_submitit)
    with pytest.raises(UsageError, match=r"facedapt\[slurm\]"):
        sweep.slurm_executor(tmp_path)


def test_dry_run_lists_jobs(toy_site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["sweep", str(PADA), *FAST, "--grid", "seed=0,1", "--subjects", "none", "--sweep-dir",
               str(tmp_path / "sw"), "--dry-run"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith("2 job(s)")
    recipes = [yaml.safe_load(p.read_text()) for p in (tmp_path / "sw").glob("*/recipe.yaml")]
    assert sorted(r["seed"] for r in recipes) == [0, 1]
    assert not list((tmp_path / "sw").glob("*/run"))
