"""Method comparison on the built-in synthetic faces: benchmark protocol v2 (personalized).

- People: each seed draws new synthetic people (the dataset seed follows the run seed); the first
  ``--targets`` people of a seed are its target people, every other person is source data.
- Holdout: each target person's captures (all views of one expression instance) are split in
  halves, stratified by expression: methods adapt on one half (unlabelled; the target-supervised
  upper bound uses its labels) and are scored on the other.
- Source models: every row trains its own source model per seed, except a row listed in
  ``SHARES``, which differs from the row it names in adaptation-time terms alone and adapts from
  that row's saved source model. The table names each row's source model.
- Before/after: every run records each person's accuracy with the row's source model before
  adaptation, on the same images.
- Statistics (facedapt.compare, facedapt.stats; the same as ``facedapt compare --against``):
  mean and sample std over seeds; every (seed, person) result kept; paired differences against
  source-only, AdaBN and DANN with a 95% paired-t interval and the count of people improved.

    python benchmarks/compare.py --jobs 2          # quick configuration (about an hour on 2 cores)
    python benchmarks/compare.py --full            # the documented full-size configuration

Runs are kept under --workdir and skipped when their results.json exists (an interrupted run is
resumed), so an interrupted benchmark continues where it stopped. Writes
benchmarks/results/compare.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

from facedapt.compare import accuracies, add_paired, markdown, paired_cell, per_seed_cell, summarize_group
from facedapt.stats import excludes_zero, paired

ROOT = Path(__file__).resolve().parents[1]
MAIN_ROWS = ["source_only", "adabn", "dann", "cdan", "pada", "target_supervised"]
ABLATIONS = ["pada_no_cross", "pada_no_reconstruction", "pada_no_pose", "pada_no_pose_warp", "pada_shared_norm"]
#: Rows every other row is compared with, pair by pair, where the table has them.
BASELINES = ["source_only", "adabn", "dann", "dann_pose_warp"]
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
    "pada_no_pose_warp": "  without the pose_warp augmentation",
    "dann_pose_warp": "DANN (f_e only) with pose_warp (pose-aware ADA's augmentation)",
}
#: row -> the row whose source model it adapts from. Only for rows that differ from that row in
#: adaptation-time terms alone; every ablation here drops a source-time term (cross terms,
#: reconstruction, pose branch, normalization), so none shares.
SHARES: dict[str, str] = {}
#: --protocol: overrides appended to every run's. pose_shift is the paper's setting: source people
#: seen only within 30 degrees of frontal, target people at every view.
PROTOCOLS: dict[str, list[str]] = {
    "default": [],
    "pose_shift": ["data.protocol={name: personalized, source_yaw_max: 30}"],
}
#: Development people come from this dataset seed, which no reported row uses
#: (benchmarks/choose_defaults.py chooses the recipes' defaults on them).
DEV_DATASET_SEED = 1000


def configuration(full: bool) -> dict[str, Any]:
    """Rows' common overrides. Quick: 48-pixel faces, batch 32, fp32 (what ``auto`` picks on a
    CPU without fast bf16), sized to finish in about 90 minutes on such a 2-core CPU."""
    if full:
        return {"targets": 10, "seeds": 5, "overrides": [
            "train.source_steps=3000", "train.steps=300", "model.backbone={name: resnet18}"]}
    return {"targets": 8, "seeds": 3, "overrides": [
        "data.dataset.image_size=48", "train.batch_size=32", "train.precision=fp32"]}


def people(seed: int, targets: int, dataset_seed: int | None = None) -> list[str]:
    """A seed's people: the dataset seed follows the run seed (new identities and personal
    styles per seed); the first ``targets`` people are targets, each adapted on half its
    captures (unlabelled) and scored on the other half."""
    ds = seed if dataset_seed is None else dataset_seed
    return [f"seed={seed}", f"data.dataset.seed={ds}", f"data.target_subjects={{first: {targets}}}",
            "data.target_holdout=0.5"]


def source_of(row: str) -> str:
    return SHARES.get(row, row)


def run(recipe: str, run_dir: Path, overrides: list[str], threads: int, start: bool = True) -> dict | None:
    """One facedapt run (skipped when finished, resumed when interrupted); its results.json."""
    done = run_dir / "results.json"
    if not done.is_file() and not start:
        return None
    if not done.is_file():
        cmd = [sys.executable, "-m", "facedapt", "-q", "run", str(ROOT / "recipes" / f"{recipe}.yaml"), *overrides,
               "--run-dir", str(run_dir), "--no-report"]
        if (run_dir / "recipe.yaml").is_file():
            cmd.append("--resume")
        print("  $", " ".join(cmd[3:]), flush=True)
        # Several single-threaded jobs use a small machine better than one job whose threads
        # spin-wait for each other; reports are built later, on demand (`facedapt report`).
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(done.read_text())


def plan(rows: list[str], seeds: list[int], targets: int, common: list[str],
         workdir: Path) -> list[tuple[str, int, Path, list[str], Path | None]]:
    """(row, seed, run dir, overrides, run dir whose source model it needs or None) per run:
    seed by seed, so finished seeds give a table early; rows that share come after their source."""
    jobs = []
    for seed in seeds:
        for row in sorted(rows, key=lambda r: r in SHARES):
            ov = [*people(seed, targets), *common]
            base = None
            if row in SHARES:
                base = workdir / f"seed{seed}" / SHARES[row]
                ov += [f"train.init_from={base / 'source' / 'model.pt'}", "train.source_steps=0"]
            jobs.append((row, seed, workdir / f"seed{seed}" / row, ov, base))
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the full-size configuration")
    ap.add_argument("--seeds", type=int, help="seeds (each with new people)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--targets", type=int, help="target people per seed")
    ap.add_argument("--rows", nargs="*", help="only these rows (recipe names)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="threads per run")
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="default",
                    help="default: all views for source and target; pose_shift: source |yaw| <= 30")
    ap.add_argument("--workdir", type=Path, help="default benchmarks/runs/compare[-PROTOCOL]")
    ap.add_argument("--out", type=Path, help="default benchmarks/results/compare[-PROTOCOL]")
    ap.add_argument("--report-only", action="store_true",
                    help="tabulate the runs that have finished so far, start nothing")
    ap.add_argument("overrides", nargs="*", help="extra recipe overrides for every run")
    args = ap.parse_args()
    name = "compare" if args.protocol == "default" else f"compare-{args.protocol}"
    args.workdir = args.workdir or ROOT / "benchmarks" / "runs" / name
    args.out = args.out or ROOT / "benchmarks" / "results" / name
    cfg = configuration(args.full)
    seeds = list(range(args.first_seed, args.first_seed + (args.seeds or cfg["seeds"])))
    targets = args.targets or cfg["targets"]
    common = [*cfg["overrides"], *PROTOCOLS[args.protocol], *args.overrides]
    rows = args.rows or MAIN_ROWS + ABLATIONS
    missing = sorted({SHARES[r] for r in rows if r in SHARES} - set(rows))
    if missing:
        ap.error(f"--rows: {', '.join(missing)} must run too (others adapt from its source model)")
    started = time.perf_counter()
    jobs = plan(rows, seeds, targets, common, args.workdir)
    outcomes: dict[tuple[str, int], Any] = {}
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {}
        for row, seed, run_dir, ov, base in jobs:
            def job(row=row, run_dir=run_dir, ov=ov, seed=seed, base=base) -> dict | None:
                if base is not None and futures[(source_of(row), seed)].result() is None:
                    return None  # report-only, and the source model's run has not finished
                return run(row, run_dir, ov, args.threads, not args.report_only)
            futures[(row, seed)] = pool.submit(job)
        outcomes = {k: f.result() for k, f in futures.items()}
    results: dict[str, list[dict]] = {r: [outcomes[(r, s)] for s in seeds if outcomes.get((r, s))] for r in rows}
    report = summarize(results, targets, seeds, common, time.perf_counter() - started)
    # The runs' own CPU time: what the table costs on an idle machine (wall ~ CPU / jobs with one
    # thread per job), whatever else shared this one.
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    report["cpu_seconds"] = round(used.ru_utime + used.ru_stime)
    report["jobs"] = args.jobs
    previous = args.out.with_suffix(".json")
    if args.report_only and previous.is_file():  # retabulated: the runs' command and costs stay
        old = json.loads(previous.read_text())
        report.update({k: old[k] for k in ("command", "machine", "seconds", "cpu_seconds", "jobs") if k in old})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    md = render(report)
    args.out.with_suffix(".md").write_text(md)
    print(md)


def summarize(results: dict[str, list[dict]], targets: int, seeds: list[int], overrides: list[str],
              seconds: float) -> dict[str, Any]:
    """compare.json: per row its statistics (facedapt.compare, the same as `facedapt compare`),
    every (seed, person) result, paired differences against the baselines, and the goal check."""
    rows = {name: {"label": LABELS.get(name, name), "source_model": _source_label(name), **summarize_group(runs)}
            for name, runs in results.items() if runs}
    add_paired(rows, [b for b in BASELINES if b in rows])
    # What each strategy adds: the full method against the ablation without it, pair by pair.
    effects = {ab: paired(accuracies(rows["pada"]), accuracies(rows[ab])) for ab in ABLATIONS
               if ab in rows and "pada" in rows}
    return {"ablation_effects": effects, "date": date.today().isoformat(), "machine": _machine(), "command": "python benchmarks/compare.py "
            + " ".join(sys.argv[1:]), "protocol": "v2: new people per seed, capture-disjoint holdout 0.5",
            "seeds": seeds, "targets": targets, "overrides": overrides, "selection": "last",
            "interval": "95% paired t over (seed, person) pairs", "seconds": round(seconds), "rows": rows,
            "goal": goal(rows, effects)}


def goal(rows: dict[str, dict[str, Any]], effects: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The bar pose-aware ADA works toward: a mean gain over AdaBN and over DANN whose 95%
    interval is above 0, and no person more than 3 points below the source model; each strategy's
    effect (``effects``: the full method against each ablation) above 0 likewise; and with the
    cross terms, the fresh probe reading pose from f_e at most half-way from the row without them
    to chance, at no significant loss of expression accuracy."""
    if "pada" not in rows:
        return {}
    r = rows["pada"]
    out: dict[str, Any] = {}
    for b in ("adabn", "dann"):
        if b in r.get("paired", {}):
            p = r["paired"][b]
            out[f"over_{b}"] = {**p, "met": above_zero(p)}
    if "gain" in r:
        out["worst_person_gain"] = r["gain"]["worst"]
        out["no_person_below_3_points"] = r["gain"]["worst"] >= -0.03
    effects = effects or {}
    if effects:
        out["strategies"] = {ab: {**p, "met": above_zero(p)} for ab, p in effects.items()}
    key = "pose_from_expression"
    probes = (r["leakage"].get(key), rows.get("pada_no_cross", {}).get("leakage", {}).get(key),
              r.get("leakage_chance", {}).get(key))
    if None not in probes:
        full, without, chance = probes
        cost = effects.get("pada_no_cross")
        out["probe"] = {"with_cross": full, "without_cross": without, "chance": chance, "bar": (without + chance) / 2,
                        "met": full <= (without + chance) / 2 and not (cost and excludes_zero(cost) and cost["mean"] < 0)}
    return out


def above_zero(p: dict[str, Any]) -> bool:
    """A paired difference whose 95% interval lies above 0."""
    return excludes_zero(p) and p["mean"] > 0


def _source_label(row: str) -> str:
    src = source_of(row)
    return "its own (per seed)" if src == row else f"{LABELS.get(src, src).strip()}'s (adaptation-time terms differ)"


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{cpu}, {os.cpu_count()} cores, {platform.machine()}, CPU only" + (f", ONEDNN_MAX_CPU_ISA={isa}" if isa else "")


def _with_seeds(p: dict[str, Any], sep: str) -> str:
    """A paired difference's cell, then its mean per seed where it has seeds."""
    seeds = per_seed_cell(p)
    return paired_cell(p) + (sep + seeds if seeds else "")


def render(rep: dict[str, Any]) -> str:
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"
    rows = rep["rows"]
    intro = (f"Personalized adaptation on the synthetic faces, protocol {rep['protocol']} ({rep['date']}, "
             f"{rep['machine']}); {rep['targets']} target people x {len(rep['seeds'])} seeds (new people per seed); "
             f"selection rule `{rep['selection']}`; `{rep['command']}` ({rep['seconds'] // 60} min wall"
             + (f", {rep['cpu_seconds'] // 60} CPU-min in the runs" if rep.get("cpu_seconds") else "") + "). "
             f"Differences in points, {rep['interval']}, * where the interval excludes 0, "
             "(people improved / pairs).")
    against = [b for b in BASELINES if b in rows]
    header = ["method", "source model", "accuracy % (mean ± sd over seeds)", "before → gain (own source model)",
              *(f"vs {LABELS[b].strip()}" for b in against), "pose from f_e", "expression from f_p"]
    cells = []
    for name, r in rows.items():
        g = r.get("gain")
        before = (f"{pct(r['source_accuracy_mean'])} → {100 * g['mean']:+.1f} (worst {100 * g['worst']:+.1f}, "
                  f"{g['improved']}/{g['n']} improved)") if g else "-"
        cells.append([r["label"], r["source_model"], f"{pct(r['accuracy_mean'])} ± {pct(r['accuracy_std'])}", before,
                      *(paired_cell(r["paired"].get(b)) if b != name else "-" for b in against),
                      pct(r["leakage"].get("pose_from_expression")), pct(r["leakage"].get("expression_from_pose"))])
    out = [markdown(header, cells, intro)]
    yaws = sorted({y for r in rows.values() for y in r["per_yaw"]}, key=int)
    if yaws:
        out += ["Per yaw (degrees): accuracy % (mean over seeds and people)", "",
                "| method | " + " | ".join(yaws) + " |", "|---|" + "---|" * len(yaws)]
        out += [f"| {r['label']} | " + " | ".join(pct(r["per_yaw"].get(y)) for y in yaws) + " |" for r in rows.values()]
        out.append("")
    effects = rep.get("ablation_effects") or {}
    if effects:
        out += ["Each strategy's effect: the full method minus the row without it, points [95% CI] "
                "(pairs where the full method was better / pairs; the mean per seed)", ""]
        out += [f"- {LABELS[ab].strip()}: {_with_seeds(p, '; ')}" for ab, p in effects.items()]
        out.append("")
    g = rep.get("goal") or {}
    if g:
        parts = []
        for b in ("adabn", "dann"):
            if f"over_{b}" in g:
                x = g[f"over_{b}"]
                parts.append(f"over {LABELS[b].strip()} {_with_seeds(x, ', ')}: {'met' if x['met'] else 'not met'}")
        if "worst_person_gain" in g:
            parts.append(f"worst person {100 * g['worst_person_gain']:+.1f} points against its source model "
                         f"(goal no worse than -3): {'met' if g['no_person_below_3_points'] else 'not met'}")
        for ab, x in (g.get("strategies") or {}).items():
            parts.append(f"{LABELS[ab].strip().removeprefix('without ')} {paired_cell(x)}: {'met' if x['met'] else 'not met'}")
        if "probe" in g:
            x = g["probe"]
            parts.append(f"pose read from f_e {100 * x['with_cross']:.1f}% with the cross terms, {100 * x['without_cross']:.1f}% "
                         f"without, chance {100 * x['chance']:.1f}% (goal at most {100 * x['bar']:.1f}%): "
                         f"{'met' if x['met'] else 'not met'}")
        out.append("Goal check (pose-aware ADA): " + "; ".join(parts) + ".\n")
    return "\n".join(out)


if __name__ == "__main__":
    main()
