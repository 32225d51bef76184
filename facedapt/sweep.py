"""Sweeps: one job per (grid point, seed, target subject), each in a directory named by the
hash of its resolved recipe.

Layout::

    <sweep_dir>/sweep.json             the plan: every job with its swept values
    <sweep_dir>/<hash>/recipe.yaml     the job's resolved recipe (``facedapt run`` it to reproduce)
    <sweep_dir>/<hash>/job.json        what was swept: grid values, seed, subject, the command
    <sweep_dir>/<hash>/run/            the run directory (results.json, models, logs)
    <sweep_dir>/<hash>/DONE            written after run/results.json: the job is finished

A relaunch skips jobs with DONE and reruns the others, resuming those that had started (their
run directory holds checkpoints). The same recipe always hashes to the same directory, so a
sweep can be extended with more seeds or grid values and only the new jobs run.

Launchers: ``local`` (subprocesses, N at a time) and ``slurm`` (submitit, the optional extra
``facedapt[slurm]``; one SLURM job per sweep job).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import yaml
from loguru import logger

from facedapt.errors import UsageError
from facedapt.recipe.load import LoadedRecipe, load_recipe, write_resolved

DONE = "DONE"


@attrs.define
class Job:
    directory: Path
    loaded: LoadedRecipe
    swept: dict[str, Any]  # grid key -> value, plus "seed" and "subject"

    @property
    def run_dir(self) -> Path:
        return self.directory / "run"

    @property
    def done(self) -> bool:
        return (self.directory / DONE).is_file()

    def command(self, report: bool = False) -> list[str]:
        return job_command(self.directory, report)


def job_command(job_dir: Path, report: bool = False, resume: bool = False) -> list[str]:
    """The command that runs one job: quiet (its log is job.log) and, unless ``report``, without
    the report (many short runs; ``facedapt report`` builds one later)."""
    return [sys.executable, "-m", "facedapt", "-q", "run", str(job_dir / "recipe.yaml"), "--run-dir",
            str(job_dir / "run"), *([] if report else ["--no-report"]), *(["--resume"] if resume else [])]


def split_values(text: str) -> list[str]:
    """``a,b,{x: 1, y: 2},[1,2]`` -> four values: commas inside brackets or quotes do not split."""
    out, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise UsageError(f"--grid {item!r}: expected key=v1,v2,...")
        if key in grid:
            raise UsageError(f"--grid {key}: given twice")
        grid[key] = split_values(values)
    return grid


def parse_seeds(text: str) -> list[int]:
    """``3`` -> seeds 0, 1, 2; ``0,5,7`` -> those seeds."""
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        n = int(text)
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected a count (3) or a list (0,5,7)") from None
    if n < 1:
        raise UsageError(f"--seeds {text!r}: at least 1")
    return list(range(n))


def target_ids(loaded: LoadedRecipe) -> list[str]:
    """The subject ids of the targets the recipe's protocol makes (its data.target_subjects),
    found without training: the datasets are materialized (cached) and split."""
    from facedapt.engine.build import load_targets
    from facedapt.plugin_manager import get_plugins

    targets, _ = load_targets(get_plugins(loaded.recipe.plugins.block), loaded.recipe)
    return [t.id for t in targets]


def plan(recipe: str | Path, sweep_dir: Path, overrides: Sequence[str] = (), grid: dict[str, list[str]] | None = None,
         seeds: list[int] | None = None, subjects: str | list[str] | None = "all") -> list[Job]:
    """Every job of the sweep, its directory and recipe.yaml written (nothing runs).

    ``subjects``: ``"all"`` (one job per target of the recipe's protocol), a list of ids, or
    None (one job for all targets, as a plain run)."""
    grid = grid or {}
    if "seed" in grid:  # seeds given as a grid key: --seeds would override them
        seeds = None
    jobs: list[Job] = []
    ids_cache: dict[str, list[str]] = {}
    for point in itertools.product(*grid.values()):
        values = dict(zip(grid, point))
        base = [*overrides, *(f"{k}={v}" for k, v in values.items())]
        for seed in seeds if seeds is not None else [None]:
            with_seed = [*base, *([f"seed={seed}"] if seed is not None else [])]
            if subjects is None:
                ids: list[str | None] = [None]
            elif subjects == "all":
                probe = load_recipe(recipe, with_seed)
                key = json.dumps([probe.resolved.get("data"), probe.resolved.get("plugins")], sort_keys=True, default=str)
                if key not in ids_cache:
                    ids_cache[key] = target_ids(probe)
                ids = list(ids_cache[key])
            else:
                ids = list(subjects)
            for sid in ids:
                ov = [*with_seed, *([f"data.target_subjects={json.dumps([str(sid)])}"] if sid is not None else [])]
                loaded = load_recipe(recipe, ov)
                swept = {**{k: yaml.safe_load(v) for k, v in values.items()}, "seed": loaded.recipe.seed,
                         "subject": sid}
                jobs.append(Job(sweep_dir / loaded.digest, loaded, swept))
    seen: set[Path] = set()
    unique = [j for j in jobs if not (j.directory in seen or seen.add(j.directory))]  # type: ignore[func-returns-value]
    _write_plan(sweep_dir, unique, recipe, overrides, grid)
    return unique


def _write_plan(sweep_dir: Path, jobs: list[Job], recipe: Any, overrides: Any, grid: dict) -> None:
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        for job in jobs:
            job.directory.mkdir(exist_ok=True)
            if not (job.directory / "recipe.yaml").is_file():
                write_resolved(job.loaded, job.directory / "recipe.yaml")
            (job.directory / "job.json").write_text(json.dumps(
                {"swept": job.swept, "recipe": str(recipe), "command": job.command()}, indent=2), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{sweep_dir}: cannot write the sweep directory ({exc.strerror or exc})") from None
    info = {"recipe": str(recipe), "overrides": list(overrides), "grid": grid,
            "jobs": [{"dir": j.directory.name, **j.swept} for j in jobs]}
    (sweep_dir / "sweep.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")


def execute_job(directory: str | Path, threads: int = 1, report: bool = False) -> int:
    """Run (or resume) one job in a subprocess and write DONE once its results.json exists.
    Returns the exit status. Used by both launchers (SLURM pickles this function)."""
    job_dir = Path(directory)
    if (job_dir / DONE).is_file():
        return 0
    run_dir = job_dir / "run"
    # Started before: continue from its checkpoints.
    cmd = job_command(job_dir, report, resume=(run_dir / "recipe.yaml").is_file())
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with (job_dir / "job.log").open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if rc == 0 and (run_dir / "results.json").is_file():
        (job_dir / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n", encoding="utf-8")
    return rc


def launch_local(jobs: list[Job], parallel: int = 1, threads: int = 1, report: bool = False) -> dict[str, int]:
    """Run the unfinished jobs, ``parallel`` at a time; returns counts of done/failed/skipped."""
    todo = [j for j in jobs if not j.done]
    skipped = len(jobs) - len(todo)
    logger.info("sweep: {} job(s), {} already done, {} to run ({} at a time)", len(jobs), skipped, len(todo), parallel)

    def one(job: Job) -> int:
        rc = execute_job(job.directory, threads, report)
        state = "done" if job.done else f"failed (exit {rc}; see {job.directory / 'job.log'})"
        logger.info("job {} {}: {}", job.directory.name, _describe(job.swept), state)
        return rc

    with ThreadPoolExecutor(max(1, parallel)) as pool:
        codes = list(pool.map(one, todo))
    failed = sum(1 for j in todo if not j.done)
    return {"jobs": len(jobs), "skipped": skipped, "ran": len(todo), "failed": failed, "exit_codes": codes}  # type: ignore[dict-item]


def _describe(swept: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in swept.items() if v is not None)


def slurm_executor(folder: Path, partition: str | None = None, time_min: int = 240, gpus_per_node: int = 0,
                   cpus_per_task: int = 4, mem_gb: int = 16, array_parallelism: int = 64,
                   extra: dict[str, Any] | None = None) -> Any:
    """A configured submitit executor (needs the extra ``facedapt[slurm]``); nothing is submitted."""
    try:
        import submitit
    except ImportError:
        raise UsageError("--launcher slurm needs submitit: pip install 'facedapt[slurm]'") from None
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params: dict[str, Any] = {"timeout_min": time_min, "cpus_per_task": cpus_per_task, "mem_gb": mem_gb,
                              "slurm_array_parallelism": array_parallelism, "tasks_per_node": 1, "nodes": 1,
                              "name": "facedapt-sweep"}
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    if partition:
        params["slurm_partition"] = partition
    params.update(extra or {})
    executor.update_parameters(**params)
    return executor


def launch_slurm(jobs: list[Job], executor: Any, threads: int = 1, report: bool = False) -> list[Any]:
    """Submit every unfinished job as one job array; returns submitit's job handles."""
    todo = [j for j in jobs if not j.done]
    if not todo:
        return []
    with executor.batch():
        handles = [executor.submit(execute_job, str(j.directory), threads, report) for j in todo]
    logger.info("sweep: submitted {} job(s) to SLURM ({} already done)", len(todo), len(jobs) - len(todo))
    return handles


def run_sweep(recipe: str, sweep_dir: Path, *, overrides: Sequence[str] = (), grid: Sequence[str] = (), seeds: str = "1",
              subjects: str = "all", launcher: str = "local", parallel: int = 1, threads: int = 1,
              slurm: dict[str, Any] | None = None, dry_run: bool = False, report: bool = False) -> dict[str, Any]:
    """The ``facedapt sweep`` command as a function; ``report``: every job writes its report too."""
    subj: str | list[str] | None
    subj = None if subjects == "none" else "all" if subjects == "all" else [s for s in subjects.split(",") if s]
    jobs = plan(recipe, sweep_dir, list(overrides), parse_grid(list(grid)), parse_seeds(seeds), subj)
    if dry_run:
        return {"jobs": len(jobs), "done": sum(j.done for j in jobs), "planned": [str(j.directory) for j in jobs]}
    if launcher == "local":
        return launch_local(jobs, parallel, threads, report)
    if launcher == "slurm":
        executor = slurm_executor(sweep_dir / "slurm", **(slurm or {}))
        handles = launch_slurm(jobs, executor, threads, report)
        return {"jobs": len(jobs), "submitted": [h.job_id for h in handles]}
    raise UsageError(f"--launcher {launcher!r}: expected local or slurm")


__all__ = ["DONE", "Job", "execute_job", "job_command", "launch_local", "launch_slurm", "parse_grid", "plan",
           "run_sweep", "slurm_executor", "split_values", "target_ids"]
