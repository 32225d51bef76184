"""Warm start and precision, measured on real (small) runs of the engine.

1. Warm start: the DANN recipe on 2 target subjects trained from scratch (source training,
   then adaptation per subject: what a subject costs when nothing is reused), and adaptation
   from that run's saved source model (``train.init_from``, ``train.source_steps=0``) with
   shorter adaptation schedules. Reports, per schedule, the time per target subject as a
   fraction of the from-scratch time and the accuracy as a fraction of the from-scratch
   accuracy (goal: at most 25% of the time at 98% or more of the accuracy).
   The from-scratch run shares one source model across its subjects, exactly as a run with
   several targets does; a subject trained alone from scratch pays that source training, so its
   time is the source time plus its own adaptation time. Evaluation is the same for both and is
   left out of both times.
   The runs' own seconds depend on what else the machine ran meanwhile, so the time fraction is
   also computed from step costs measured side by side in one process (the source step and the
   adaptation step of the same recipe, round-robin, median process CPU time):
   ``warm steps x adapt step / (source steps x source step + default steps x adapt step)``.
2. Precision: the source-only recipe at fp32 and at bf16 autocast, two seeds each; the accuracy
   difference between precisions is set against the difference between seeds.

Writes benchmarks/results/warm_start.json and prints a markdown summary.
Usage: python benchmarks/warm_start.py [--quick] [--threads 1] [--workdir DIR]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Bench, interleaved, machine, update_docs
from compare import run

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["data.target_subjects={first: 2}", "eval.leakage_probe=false", "train.checkpoint_every=0"]


def warm_start(workdir: Path, threads: int, schedules: list[int], source_steps: int, steps: int) -> dict:
    base = [*COMMON, f"train.source_steps={source_steps}", f"train.steps={steps}"]
    t0 = time.perf_counter()
    scratch = run("dann", workdir / "scratch", base, threads)
    scratch_wall = time.perf_counter() - t0
    src_model = workdir / "scratch" / "source" / "model.pt"
    warm = {}
    for s in schedules:
        if s == steps:  # the from-scratch run adapted from this very source model with this schedule
            warm[s] = scratch
            continue
        warm[s] = run("dann", workdir / f"warm-{s}", [*base, f"train.init_from={src_model}", "train.source_steps=0",
                                                         f"train.steps={s}"], threads)
    src_seconds = scratch["timing"]["source"]
    subjects = list(scratch["per_subject"])
    rows = []
    for s, res in sorted(warm.items(), reverse=True):
        per = {}
        for sid in subjects:
            scratch_time = src_seconds + scratch["timing"]["per_subject_adapt"][sid]
            warm_time = res["timing"]["per_subject_adapt"][sid]
            acc_s, acc_w = scratch["per_subject"][sid]["accuracy"], res["per_subject"][sid]["accuracy"]
            per[sid] = {"scratch_seconds": round(scratch_time, 2), "warm_seconds": round(warm_time, 2),
                        "time_fraction": round(warm_time / scratch_time, 4), "scratch_accuracy": acc_s,
                        "warm_accuracy": acc_w, "accuracy_fraction": round(acc_w / acc_s, 4) if acc_s else None}
        tf = statistics.fmean(p["time_fraction"] for p in per.values())
        af = res["target_accuracy"] / scratch["target_accuracy"] if scratch["target_accuracy"] else float("nan")
        rows.append({"adapt_steps": s, "per_subject": per, "mean_time_fraction": round(tf, 4),
                     "warm_accuracy": res["target_accuracy"], "scratch_accuracy": scratch["target_accuracy"],
                     "accuracy_fraction": round(af, 4), "meets_goal": tf <= 0.25 and af >= 0.98})
    return {"recipe": "dann", "source_steps": source_steps, "default_steps": steps, "overrides": base,
            "source_seconds": src_seconds, "scratch_run_wall_seconds": round(scratch_wall, 1),
            "precision": scratch.get("precision"), "schedules": rows}


def step_costs(rounds: int, steps: int) -> dict:
    """Median seconds of the DANN source step and adaptation step, measured round-robin."""
    ov = ["device=cpu", *COMMON]
    benches = {"source": Bench("dann", ov, phase="source"), "adapt": Bench("dann", ov, phase="adapt")}
    return interleaved(benches, rounds=rounds, steps=steps)


def modeled(ws: dict, costs: dict) -> None:
    """Adds the step-cost time fraction to every schedule row (CPU and wall medians)."""
    for basis, k in (("cpu", "cpu_step_s"), ("wall", "step_s")):
        src, ada = costs["source"][k], costs["adapt"][k]
        scratch = ws["source_steps"] * src + ws["default_steps"] * ada
        for row in ws["schedules"]:
            row[f"step_cost_time_fraction_{basis}"] = round(row["adapt_steps"] * ada / scratch, 4)
    for row in ws["schedules"]:
        row["meets_goal"] = row["step_cost_time_fraction_cpu"] <= 0.25 and row["accuracy_fraction"] >= 0.98


def precision_check(workdir: Path, threads: int, seeds: int, source_steps: int, jobs: int) -> dict:
    runs = [(p, s) for p in ("fp32", "bf16") for s in range(seeds)]

    def one(ps: tuple[str, int]) -> dict:
        p, s = ps
        return run("source_only", workdir / f"precision-{p}-seed{s}",
                   [*COMMON, f"seed={s}", f"train.precision={p}", f"train.source_steps={source_steps}"], threads)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        results = dict(zip(runs, pool.map(one, runs)))
    out: dict = {"recipe": "source_only", "source_steps": source_steps, "seeds": seeds, "rows": {}}
    for p in ("fp32", "bf16"):
        acc = [results[(p, s)]["target_accuracy"] for s in range(seeds)]
        val = [results[(p, s)]["source_val_accuracy"] for s in range(seeds)]
        out["rows"][p] = {"target_accuracy": acc, "source_val_accuracy": val,
                          "source_seconds": [results[(p, s)]["timing"]["source"] for s in range(seeds)]}
    # Noise: how far two seeds of the same precision land apart; the precision effect: how far
    # the two precisions land apart at the same seed.
    for metric in ("target_accuracy", "source_val_accuracy"):
        f, b = out["rows"]["fp32"][metric], out["rows"]["bf16"][metric]
        out[f"{metric}_precision_delta"] = [round(b[s] - f[s], 4) for s in range(seeds)]
        out[f"{metric}_seed_delta"] = [round(v[1] - v[0], 4) for v in (f, b)] if seeds > 1 else []
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def render(rep: dict) -> str:
    pct = lambda x: f"{100 * x:.1f}"
    ws = rep["warm_start"]
    out = [f"Warm start ({rep['date']}, {rep['machine']}, {rep['threads']} thread(s)); `{rep['command']}`", "",
           (f"DANN, {len(ws['schedules'][0]['per_subject'])} target subjects, precision {ws['precision']}; from scratch = "
           f"{ws['source_steps']} source steps ({ws['source_seconds']:.0f} s) + {ws['default_steps']} adaptation steps."), "",
           (f"Step costs measured side by side (median of {rep['step_costs']['source']['n']} steps each, 1 process): "
           f"source step {1000 * rep['step_costs']['source']['cpu_step_s']:.0f} ms CPU "
           f"({1000 * rep['step_costs']['source']['step_s']:.0f} ms wall), adaptation step "
           f"{1000 * rep['step_costs']['adapt']['cpu_step_s']:.0f} ms CPU ({1000 * rep['step_costs']['adapt']['step_s']:.0f} ms wall)."), "",
           ("| adaptation steps (warm) | time per subject, warm / from scratch: from step costs (CPU) | the runs' own seconds "
           "(warm/scratch per subject) | accuracy warm % | accuracy from scratch % | accuracy fraction "
           "| goal (<= 25% time, >= 98% accuracy) |"), "|---|---|---|---|---|---|---|"]
    for r in ws["schedules"]:
        secs = ", ".join(f"{p['warm_seconds']:.0f}/{p['scratch_seconds']:.0f} s" for p in r["per_subject"].values())
        out.append(f"| {r['adapt_steps']} | {pct(r['step_cost_time_fraction_cpu'])}% | {pct(r['mean_time_fraction'])}% "
                   f"({secs}) | {pct(r['warm_accuracy'])} | {pct(r['scratch_accuracy'])} | {pct(r['accuracy_fraction'])}% "
                   f"| {'met' if r['meets_goal'] else 'not met'} |")
    pc = rep["precision"]
    out += ["", f"Precision (source-only, {pc['source_steps']} source steps, {pc['seeds']} seed(s)):", "",
            "| precision | target accuracy % per seed | source-val accuracy % per seed | source training s per seed |",
            "|---|---|---|---|"]
    for p, row in pc["rows"].items():
        out.append(f"| {p} | {' / '.join(pct(a) for a in row['target_accuracy'])} | "
                   f"{' / '.join(pct(a) for a in row['source_val_accuracy'])} | "
                   f"{' / '.join(f'{s:.0f}' for s in row['source_seconds'])} |")
    out += ["", (f"bf16 - fp32 at the same seed: target {', '.join(f'{100 * d:+.1f}' for d in pc['target_accuracy_precision_delta'])} "
            f"points, source-val {', '.join(f'{100 * d:+.1f}' for d in pc['source_val_accuracy_precision_delta'])} points; "
            f"seed 1 - seed 0 at the same precision (fp32, bf16): target "
            f"{', '.join(f'{100 * d:+.1f}' for d in pc['target_accuracy_seed_delta'])} points, source-val "
            f"{', '.join(f'{100 * d:+.1f}' for d in pc['source_val_accuracy_seed_delta'])} points.")]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter runs (a smoke test of the script)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--jobs", type=int, default=1, help="precision runs at a time")
    ap.add_argument("--schedules", default="150,100,90,75,50", help="adaptation steps to try from the source model")
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "runs" / "warm_start")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "warm_start.json")
    args = ap.parse_args()
    source_steps, steps, prec_steps, seeds = (600, 150, 300, 2) if not args.quick else (60, 20, 30, 2)
    schedules = [int(s) for s in args.schedules.split(",")] if not args.quick else [20, 10]
    workdir = args.workdir / ("quick" if args.quick else "full")
    started = time.perf_counter()
    rep = {"date": datetime.date.today().isoformat(), "machine": machine(), "threads": args.threads,
           "command": "python benchmarks/warm_start.py " + " ".join(sys.argv[1:]),
           "load_avg_1min_start": os.getloadavg()[0]}
    rep["warm_start"] = warm_start(workdir, args.threads, schedules, source_steps, steps)
    rep["step_costs"] = step_costs(*((2, 2) if args.quick else (4, 4)))
    modeled(rep["warm_start"], rep["step_costs"])
    rep["precision"] = precision_check(workdir, args.threads, seeds, prec_steps, args.jobs)
    rep["load_avg_1min_end"] = os.getloadavg()[0]
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
