"""Warm start and precision, measured on real runs of the engine.

1. Warm start, on the default recipe (pose-aware ADA) in the comparison's setting: several
   target subjects, each adapted on half its images (unlabelled) and measured on the other
   half, several seeds. Per seed, a reference run is trained from scratch (source training,
   then each subject's adaptation with the longer reference schedule, ``--reference-steps``),
   and warm runs adapt from that run's saved source model (``train.init_from``,
   ``train.source_steps=0``) with each candidate schedule. Reported per schedule:

   - time per subject, warm against from scratch. A subject trained from scratch pays the
     source training plus its adaptation with the same schedule, so the fraction is
     ``N x adapt step / (source steps x source step + N x adapt step)``, from step costs
     measured side by side in one process (round-robin, median process CPU time). The runs'
     own seconds depend on what else shared the machine and are kept in the JSON only;
   - accuracy, warm against the reference schedule from scratch: mean over seeds, each seed,
     and the worst subject.

   Goal: at most 25% of the time at 98% or more of the accuracy.
2. Precision: the source-only recipe at fp32 and at bf16 autocast, at its full source schedule,
   several seeds, measured on the same held-out target halves; the accuracy difference between
   precisions is set against the spread between seeds.

Finished runs are kept under --workdir and skipped, so an interrupted benchmark continues.
Writes benchmarks/results/warm_start.{json,md} and refreshes docs/benchmarks.md.
Usage: python benchmarks/warm_start.py [--quick] [--schedules 100,90,75] [--jobs 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Bench, interleaved, machine, update_docs
from compare import people, run

from facedapt.tables import markdown

ROOT = Path(__file__).resolve().parents[1]


def setting(args: argparse.Namespace, seed: int) -> list[str]:
    """The comparison's setting, so its runs and these are alike."""
    return [*people(seed, args.targets), *args.extra]


def step_costs(recipe: str, rounds: int, steps: int) -> dict:
    """Median seconds of the recipe's source step and adaptation step, measured round-robin."""
    ov = ["device=cpu", "data.target_subjects={first: 1}"]
    benches = {"source": Bench(recipe, ov, phase="source"), "adapt": Bench(recipe, ov, phase="adapt")}
    return interleaved(benches, rounds=rounds, steps=steps)


def warm_start(args: argparse.Namespace, pool: ThreadPoolExecutor) -> Callable[[], dict]:
    """Queues the runs; the returned function waits for them and tabulates."""
    wd, seeds = args.workdir, range(args.seeds)
    ref_dirs = {s: wd / f"seed{s}" / f"reference-{args.reference_steps}" for s in seeds}

    def reference(s: int) -> dict:
        return run(args.recipe, ref_dirs[s], [*setting(args, s),
                                              f"train.steps={args.reference_steps}"], args.threads)

    refs = {s: pool.submit(reference, s) for s in seeds}

    def warm(job: tuple[int, int]) -> dict:
        s, n = job
        refs[s].result()  # its source model
        return run(args.recipe, wd / f"seed{s}" / f"warm-{n}", [
            *setting(args, s), f"train.init_from={ref_dirs[s] / 'source' / 'model.pt'}",
            "train.source_steps=0", f"train.steps={n}", "eval.leakage_probe=false"], args.threads)

    jobs = {(s, n): pool.submit(warm, (s, n)) for n in args.schedules for s in seeds}
    return lambda: tabulate_warm(args, {s: f.result() for s, f in refs.items()},
                                 {k: f.result() for k, f in jobs.items()}, ref_dirs[0])


def tabulate_warm(args: argparse.Namespace, ref_runs: dict, warm_runs: dict, ref_dir: Path) -> dict:
    seeds = range(args.seeds)
    resolved = yaml.safe_load((ref_dir / "recipe.yaml").read_text())
    source_steps = resolved["train"]["source_steps"]

    ref_acc = [ref_runs[s]["target_accuracy"] for s in seeds]
    rows = []
    for n in args.schedules:
        acc = [warm_runs[(s, n)]["target_accuracy"] for s in seeds]
        deltas = {f"seed{s}/{sid}": warm_runs[(s, n)]["per_subject"][sid]["accuracy"] - v["accuracy"]
                  for s in seeds for sid, v in ref_runs[s]["per_subject"].items()}
        rows.append({"adapt_steps": n, "warm_accuracy": acc, "warm_accuracy_mean": statistics.fmean(acc),
                     "accuracy_fraction": statistics.fmean(acc) / statistics.fmean(ref_acc),
                     "accuracy_fraction_per_seed": [a / r for a, r in zip(acc, ref_acc)],
                     "worst_subject_delta": min(deltas.values()), "subject_deltas": deltas,
                     "run_adapt_seconds_per_subject": statistics.fmean(
                         t for s in seeds for t in warm_runs[(s, n)]["timing"]["per_subject_adapt"].values())})
    return {"recipe": args.recipe, "targets": args.targets, "seeds": args.seeds, "source_steps": source_steps,
            "reference_steps": args.reference_steps, "reference_accuracy": ref_acc,
            "reference_accuracy_mean": statistics.fmean(ref_acc), "precision": ref_runs[0].get("precision"),
            "schedules": rows}


def time_fractions(ws: dict, costs: dict) -> None:
    """Adds the step-cost time fractions and the goal verdict to every schedule row."""
    src, ada = costs["source"]["cpu_step_s"], costs["adapt"]["cpu_step_s"]
    for row in ws["schedules"]:
        n = row["adapt_steps"]
        row["time_fraction"] = n * ada / (ws["source_steps"] * src + n * ada)
        row["meets_goal"] = row["time_fraction"] <= 0.25 and row["accuracy_fraction"] >= 0.98


def precision_check(args: argparse.Namespace, pool: ThreadPoolExecutor) -> Callable[[], dict]:
    """Queues the runs; the returned function waits for them and tabulates."""
    runs = [(p, s) for p in ("fp32", "bf16") for s in range(args.precision_seeds)]

    def one(ps: tuple[str, int]) -> dict:
        p, s = ps
        return run("source_only", args.workdir / f"seed{s}" / f"source_only-{p}",
                   [*setting(args, s), f"train.precision={p}", "eval.leakage_probe=false"],
                   args.threads)

    futures = {ps: pool.submit(one, ps) for ps in runs}
    return lambda: tabulate_precision(args, {ps: f.result() for ps, f in futures.items()})


def tabulate_precision(args: argparse.Namespace, results: dict) -> dict:
    seeds = range(args.precision_seeds)
    out: dict = {"recipe": "source_only", "seeds": args.precision_seeds, "rows": {}}
    for p in ("fp32", "bf16"):
        out["rows"][p] = {k: [results[(p, s)][k] for s in seeds] for k in ("target_accuracy", "source_val_accuracy")}
        out["rows"][p]["source_seconds"] = [results[(p, s)]["timing"]["source"] for s in seeds]
    for metric in ("target_accuracy", "source_val_accuracy"):
        f, b = out["rows"]["fp32"][metric], out["rows"]["bf16"][metric]
        out[f"{metric}_precision_delta"] = [b[s] - f[s] for s in seeds]
        out[f"{metric}_mean_delta"] = statistics.fmean(b) - statistics.fmean(f)
        out[f"{metric}_seed_std"] = {p: statistics.stdev(v) if len(v) > 1 else 0.0 for p, v in (("fp32", f), ("bf16", b))}
    return out


def render(rep: dict) -> str:
    pct = lambda x: f"{100 * x:.1f}"
    ws, c = rep["warm_start"], rep["step_costs"]
    src, ada = 1000 * c["source"]["cpu_step_s"], 1000 * c["adapt"]["cpu_step_s"]
    out = [f"Warm start ({rep['date']}, {rep['machine']}, {rep['threads']} thread(s) per run); `{rep['command']}`", "",
           (f"Recipe `{ws['recipe']}`, {ws['targets']} target subjects x {ws['seeds']} seeds, each subject adapted on "
            f"half its images and measured on the other half; precision {ws['precision']}. Reference: trained from "
            f"scratch, {ws['source_steps']} source steps then {ws['reference_steps']} adaptation steps per subject, "
            f"target accuracy {pct(ws['reference_accuracy_mean'])}% "
            f"({' / '.join(pct(a) for a in ws['reference_accuracy'])} per seed)."), "",
           (f"Step costs, side by side in one process (median process CPU time of {c['source']['n']} steps each): "
            f"source step {src:.0f} ms, adaptation step {ada:.0f} ms. From scratch, a subject costs "
            f"{ws['source_steps']} x {src:.0f} ms + N x {ada:.0f} ms; warm, N x {ada:.0f} ms."), ""]
    out.append(markdown(
        ["adaptation steps N", "time per subject, warm / from scratch", "accuracy warm % (per seed)",
         "accuracy fraction of the reference (per seed)", "worst subject vs reference, points",
         "goal (<= 25% time, >= 98% accuracy)"],
        [[r["adapt_steps"], f"{pct(r['time_fraction'])}%",
          f"{pct(r['warm_accuracy_mean'])} ({' / '.join(pct(a) for a in r['warm_accuracy'])})",
          f"{pct(r['accuracy_fraction'])}% ({' / '.join(pct(a) for a in r['accuracy_fraction_per_seed'])})",
          f"{100 * r['worst_subject_delta']:+.1f}", "met" if r["meets_goal"] else "not met"]
         for r in ws["schedules"]]))
    pc = rep["precision"]
    out.append(markdown(
        ["precision", "target accuracy % per seed", "source-val accuracy % per seed", "source training s per seed"],
        [[p, " / ".join(pct(a) for a in row["target_accuracy"]), " / ".join(pct(a) for a in row["source_val_accuracy"]),
          " / ".join(f"{s:.0f}" for s in row["source_seconds"])] for p, row in pc["rows"].items()],
        f"Precision (source-only recipe, the recipe's source schedule, {pc['seeds']} seeds, same held-out halves):"))
    sd = pc["target_accuracy_seed_std"]
    out += [(f"bf16 - fp32: target accuracy {100 * pc['target_accuracy_mean_delta']:+.1f} points on average "
                 f"({', '.join(f'{100 * d:+.1f}' for d in pc['target_accuracy_precision_delta'])} per seed), "
                 f"source-val {100 * pc['source_val_accuracy_mean_delta']:+.1f} points; standard deviation over seeds "
                 f"of the target accuracy: fp32 {100 * sd['fp32']:.1f}, bf16 {100 * sd['bf16']:.1f} points.")]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs on 2 subjects (a smoke test of the script)")
    ap.add_argument("--recipe", default="pada")
    ap.add_argument("--threads", type=int, default=1, help="threads per run")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time")
    ap.add_argument("--targets", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--precision-seeds", type=int, default=3)
    ap.add_argument("--reference-steps", type=int, default=150)
    ap.add_argument("--schedules", default="100,90,75", help="adaptation steps to try from the source model")
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "runs" / "warm_start")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "warm_start.json")
    args = ap.parse_args()
    args.schedules = [int(s) for s in args.schedules.split(",")]
    if args.quick:
        args.targets, args.seeds, args.precision_seeds, args.reference_steps, args.schedules = 2, 1, 2, 20, [10]
        args.workdir = args.workdir / "quick"
    args.extra = ["train.source_steps=40"] if args.quick else []
    started = time.perf_counter()
    rep = {"date": datetime.date.today().isoformat(), "machine": machine(), "threads": args.threads,
           "command": "python benchmarks/warm_start.py " + " ".join(sys.argv[1:])}
    # Step costs first, while this script's runs do not yet share the machine.
    rep["step_costs"] = step_costs(args.recipe, *((2, 2) if args.quick else (4, 4)))
    with ThreadPoolExecutor(args.jobs) as pool:
        # Everything is queued at once (references first), so no core idles between the parts.
        warm, precision = warm_start(args, pool), precision_check(args, pool)
        rep["warm_start"], rep["precision"] = warm(), precision()
    time_fractions(rep["warm_start"], rep["step_costs"])
    rep["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rep, indent=2) + "\n")
    md = render(rep)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    if args.out.parent == ROOT / "benchmarks" / "results":
        update_docs()


if __name__ == "__main__":
    main()
