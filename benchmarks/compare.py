"""Method comparison on the built-in synthetic faces (personalized protocol).

Every row adapts from the same source model per seed (trained once by the pose-aware recipe
with all its networks), so rows differ only in what they do on the target person. Each target
subject's images are split in halves: methods adapt on one half (unlabelled; the
target-supervised upper bound uses its labels) and are measured on the other.

    python benchmarks/compare.py                 # quick configuration (about an hour on 2 cores)
    python benchmarks/compare.py --full          # the documented full-size configuration

Runs are kept under --workdir and skipped when their results.json exists, so an interrupted
benchmark continues where it stopped. Writes benchmarks/results/compare.{json,md}. The table
statistics come from facedapt.compare (shared with `facedapt compare`, which builds the same
kind of table from a `facedapt sweep`: see docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from facedapt.compare import breakdowns, markdown, summarize_group

ROOT = Path(__file__).resolve().parents[1]
MAIN_ROWS = ["source_only", "adabn", "dann", "cdan", "pada", "target_supervised"]
ABLATIONS = ["pada_no_cross", "pada_no_reconstruction", "pada_no_pose", "pada_shared_norm"]
LABELS = {
    "source_only": "source-only",
    "adabn": "AdaBN",
    "dann": "DANN (f_e only)",
    "cdan": "CDAN+E",
    "pada": "pose-aware ADA (full)",
    "pada_no_cross": "  without cross-adversarial terms",
    "pada_no_reconstruction": "  without reconstruction",
    "pada_no_pose": "  without pose branch",
    "pada_shared_norm": "  with shared normalization",
    "target_supervised": "target-supervised (upper bound, uses target labels)",
}


def configuration(full: bool) -> dict:
    if full:
        return {"targets": 10, "seeds": 5, "ablation_seeds": 3, "overrides": [
            "train.source_steps=3000", "train.steps=300", "model.backbone={name: resnet18}"]}
    return {"targets": 6, "seeds": 3, "ablation_seeds": 1, "overrides": []}


def subjects_setting(targets: int) -> list[str]:
    """The first ``targets`` held-out subjects, each adapted on half its images (unlabelled) and
    measured on the other half."""
    return [f"data.target_subjects={{first: {targets}}}", "data.target_holdout=0.5"]


def run(recipe: str, run_dir: Path, overrides: list[str], threads: int, start: bool = True) -> dict | None:
    done = run_dir / "results.json"
    if not done.is_file() and not start:
        return None
    if not done.is_file():
        cmd = [sys.executable, "-m", "facedapt", "-q", "run", str(ROOT / "recipes" / f"{recipe}.yaml"), *overrides,
               "--run-dir", str(run_dir)]
        if (run_dir / "recipe.yaml").is_file():
            cmd.append("--resume")
        print("  $", " ".join(cmd[3:]), flush=True)
        # Several single-threaded jobs use a small machine better than one job whose threads
        # spin-wait for each other.
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(cmd, check=True, env=env)
    return json.loads(done.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the full-size configuration")
    ap.add_argument("--seeds", type=int, help="seeds for the main rows")
    ap.add_argument("--ablation-seeds", type=int)
    ap.add_argument("--targets", type=int, help="number of target subjects")
    ap.add_argument("--rows", nargs="*", help="only these rows (recipe names)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="threads per run")
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "runs" / "compare")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "compare")
    ap.add_argument("--report-only", action="store_true",
                    help="tabulate the runs that have finished so far, start nothing")
    ap.add_argument("overrides", nargs="*", help="extra recipe overrides for every run")
    args = ap.parse_args()
    cfg = configuration(args.full)
    seeds = args.seeds or cfg["seeds"]
    ab_seeds = args.ablation_seeds or cfg["ablation_seeds"]
    targets = args.targets or cfg["targets"]
    common = [*subjects_setting(targets), *cfg["overrides"], *args.overrides]
    rows = args.rows or MAIN_ROWS + ABLATIONS
    started = time.perf_counter()
    base_dirs = {seed: args.workdir / f"seed{seed}" / "pada" for seed in range(seeds)}
    with ThreadPoolExecutor(args.jobs) as pool:
        # Each seed's source model first (its rows start from it); rows of a seed whose model
        # is ready run while later seeds' models still train. Bases are queued first, so a
        # row waiting for its base never starves it.
        start = not args.report_only
        base_futures = {s: pool.submit(run, "pada", base_dirs[s], [f"seed={s}", *common], args.threads, start)
                        for s in base_dirs}
        jobs = []
        for seed in range(seeds):
            warm = [f"train.init_from={base_dirs[seed] / 'source' / 'model.pt'}", "train.source_steps=0"]
            for row in rows:
                if row == "pada" or (row in ABLATIONS and seed >= ab_seeds):
                    continue
                jobs.append((row, seed, [f"seed={seed}", *common, *warm]))
        jobs.sort(key=lambda j: (j[0] in ABLATIONS, j[1]))  # every seed's main rows before ablations

        def after_base(job: tuple) -> dict | None:
            row, seed, overrides = job
            if base_futures[seed].result() is None:  # report-only and the base is unfinished
                return None
            return run(row, args.workdir / f"seed{seed}" / row, overrides, args.threads, start)

        outcomes = list(pool.map(after_base, jobs))
        bases = {s: f.result() for s, f in base_futures.items()}
    results: dict[str, list[dict]] = {r: [] for r in rows}
    for (row, _seed, _ov), res in zip(jobs, outcomes):
        if res is not None:
            results[row].append(res)
    if "pada" in results:
        results["pada"] = [bases[s] for s in range(seeds) if bases[s] is not None]

    report = summarize(results, seeds, ab_seeds, targets, common, time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    md = render(report)
    args.out.with_suffix(".md").write_text(md)
    print(md)


def summarize(results: dict[str, list[dict]], seeds: int, ab_seeds: int, targets: int, overrides: list[str],
              seconds: float) -> dict:
    # Per-row statistics come from the library, so this table and `facedapt compare` agree.
    base = summarize_group(results["source_only"])["per_subject"] if results.get("source_only") else None
    rows = {name: {"label": LABELS.get(name, name), **summarize_group(runs, base)}
            for name, runs in results.items() if runs}
    goal = {}
    if "pada" in rows and "source_only" in rows:
        d = rows["pada"]["per_subject_delta"]
        goal = {"mean_gain_over_source_only": rows["pada"]["accuracy_mean"] - rows["source_only"]["accuracy_mean"],
                "worst_subject_delta": min(d.values()) if d else None,
                "gain_over_adabn": rows["pada"]["accuracy_mean"] - rows["adabn"]["accuracy_mean"] if "adabn" in rows else None}
    return {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only",
            "command": "python benchmarks/compare.py " + " ".join(sys.argv[1:]), "seeds": seeds,
            "ablation_seeds": ab_seeds, "targets": targets, "overrides": overrides, "selection": "last",
            "seconds": round(seconds), "rows": rows, "goal": goal}


def render(rep: dict) -> str:
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"
    intro = (f"Personalized adaptation on the synthetic faces ({rep['date']}, {rep['machine']}); "
             f"{rep['targets']} target subjects, main rows {rep['seeds']} seeds, ablations {rep['ablation_seeds']}; "
             f"selection rule `{rep['selection']}`; `{rep['command']}` ({rep['seconds'] // 60} min).")
    header = ["method", "seeds", "target accuracy % (mean ± std over seeds)", "UAR %", "spread over subjects",
              "pose from f_e", "expression from f_p", "adapt s/subject"]
    cells = [[r["label"], str(r["seeds"]), f"{pct(r['accuracy_mean'])} ± {pct(r['accuracy_std'])}", pct(r["uar_mean"]),
              pct(r["subject_std"]), pct(r["leakage"].get("pose_from_expression")),
              pct(r["leakage"].get("expression_from_pose")), f"{r['adapt_seconds_per_subject']:.1f}"]
             for r in rep["rows"].values()]
    out = [markdown(header, cells, intro)]
    rows = rep["rows"]
    if "source_only" in rows:
        out.append(breakdowns({r["label"]: r for r in rows.values()}, list(rows["source_only"]["per_subject"]),
                              list(rows["source_only"]["per_yaw"])))
    if rep["goal"]:
        g = rep["goal"]
        out.append(f"Goal check: mean gain over source-only {100 * g['mean_gain_over_source_only']:+.1f} points (goal +5); "
                   f"worst subject {100 * g['worst_subject_delta']:+.1f} points (goal no worse than -3); "
                   f"gain over AdaBN {100 * (g['gain_over_adabn'] or 0):+.1f} points (goal > 0).\n")
    return "\n".join(out)


if __name__ == "__main__":
    main()
