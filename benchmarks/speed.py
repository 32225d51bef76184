"""Speed benchmark suite: one command, every section of the speed benchmark.

    python benchmarks/speed.py            # full (about 7 minutes on an idle 2-core CPU, 15 under load)
    python benchmarks/speed.py --quick    # fewer configurations and steps (about 5 minutes)

Sections:
1. Training throughput of the engine's step (see ``_harness.py``: built and stepped as
   ``PhaseRunner`` does) for source_only, dann, cdan, pada and pada with each optional switch
   toggled, at fp32 / bf16 autocast x channels_last off / on; batch 64 source + 64 target
   (source_only: 64 source, it does not adapt), 64x64 synthetic faces, convnet backbone. All
   configurations are stepped round-robin in one process, so ratios are side by side; medians of
   the wall time per step, and of the process CPU time (with one thread: the step's own work).
   A check row times ``PhaseRunner.run_phase`` itself for the DANN default.
2. Synthetic generation rate (``synthetic_rate.measure``).
3. Time to the first training step of the default recipe (pada), in a fresh process, with a
   fresh dataset cache (cold: the faces are generated) and again with that cache (warm).
4. Peak resident memory per method (a process per method; VmHWM, see ``maxrss_mib``).
5. Growth: a whole run (DANN, short schedules) in a fresh process per point: time and peak
   memory against the number of target subjects, images per subject and input size.

Writes benchmarks/results/speed.json and speed.md and refreshes docs/benchmarks.md.
Threads: OMP_NUM_THREADS (default 1; on a shared 2-core machine a second thread mostly
spin-waits for a core another job holds).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _harness import (
    ROOT,
    Bench,
    interleaved,
    machine,
    maxrss_mib,
    recipe_overrides,
    threads_from_env,
    update_docs,
)

from facedapt.tables import markdown

RESULTS = ROOT / "benchmarks" / "results"

#: Method rows: (recipe, overrides). The pada switches are toggled one at a time from the default.
METHODS: dict[str, tuple[str, list[str]]] = {
    "source_only": ("source_only", []),
    "dann": ("dann", []),
    "cdan": ("cdan", []),
    "pada": ("pada", []),
    "pada no cross": ("pada", ["method.cross_adversarial=false"]),
    "pada no reconstruction": ("pada", ["method.reconstruction=false"]),
    "pada no cross_pose": ("pada", ["method.cross_pose=false"]),
    "pada shared norm": ("pada", ["method.norm=shared", "method.adabn=false"]),
    "pada joint discriminator": ("pada", ["method.joint_discriminator=true"]),
    "pada alternating updates": ("pada", ["method.adversarial=alternating"]),
    "pada shared trunk": ("pada", ["method.shared_trunk=true"]),
    # Not a method switch: the optimizer's multi-tensor path (CPU Adam defaults to a per-tensor loop).
    "dann, Adam foreach": ("dann", ["train.adapt_optimizer={name: torch.optim.Adam, lr: 0.0001, foreach: true}"]),
    "pada, Adam foreach": ("pada", ["train.adapt_optimizer={name: torch.optim.Adam, lr: 0.0001, foreach: true}"]),
}
#: Rows measured at the default precision and layout only.
DEFAULT_ONLY = {"dann, Adam foreach", "pada, Adam foreach"}
#: (precision, channels_last) columns; the last is the default of the recipes on this CPU.
LAYOUTS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
#: On a CUDA device fp16 autocast (with gradient scaling) is measured too.
CUDA_LAYOUTS = [*LAYOUTS, ("fp16", False), ("fp16", True)]
#: The device every section measures on (``--device``).
DEVICE = "cpu"


def layouts() -> list[tuple[str, bool]]:
    return CUDA_LAYOUTS if DEVICE == "cuda" else LAYOUTS


def key(method: str, precision: str, cl: bool) -> str:
    return f"{method} | {precision}{' cl' if cl else ''}"


# ----------------------------------------------------------------------------- 1. throughput
def throughput(quick: bool) -> dict[str, Any]:
    default = ("bf16", True)
    configs = []
    for name in METHODS:
        if name in DEFAULT_ONLY:
            cells = [default]
        else:
            cells = layouts() if (not quick or name in ("dann", "pada")) else [("fp32", False), default]
        configs += [(name, p, cl) for p, cl in cells]
    benches = {}
    for name, p, cl in configs:
        recipe, extra = METHODS[name]
        benches[key(name, p, cl)] = Bench(recipe, recipe_overrides(p, cl, extra=extra, device=DEVICE))
    rounds, steps = (2, 1) if quick else (2, 2)
    stats = interleaved(benches, rounds=rounds, steps=steps, warmup=1)
    rows = {k: {"method": n, "precision": p, "channels_last": cl, **stats[key(n, p, cl)]}
            for k, (n, p, cl) in ((key(*c), c) for c in configs)}
    dk, pk, plain = key("dann", *default), key("pada", *default), key("dann", "fp32", False)
    ratios = {
        "pada_over_dann_wall": rows[pk]["step_s"] / rows[dk]["step_s"],
        "pada_over_dann_cpu": rows[pk]["cpu_step_s"] / rows[dk]["cpu_step_s"],
        "dann_default_over_plain_wall": rows[plain]["step_s"] / rows[dk]["step_s"],
        "dann_default_over_plain_cpu": rows[plain]["cpu_step_s"] / rows[dk]["cpu_step_s"],
        "switches": {n: {"over_pada_wall": rows[key(n, *default)]["step_s"] / rows[pk]["step_s"],
                         "over_pada_cpu": rows[key(n, *default)]["cpu_step_s"] / rows[pk]["cpu_step_s"],
                         "over_dann_cpu": rows[key(n, *default)]["cpu_step_s"] / rows[dk]["cpu_step_s"]}
                     for n in METHODS if n.startswith("pada ")},
        "adam_foreach": {n: {"over_plain_adam_wall": rows[key(n, *default)]["step_s"] / rows[key(n.split(",")[0], *default)]["step_s"],
                             "over_plain_adam_cpu": rows[key(n, *default)]["cpu_step_s"]
                             / rows[key(n.split(",")[0], *default)]["cpu_step_s"]} for n in DEFAULT_ONLY},
    }
    check = engine_check(benches[dk], 4 if quick else 8)
    return {"rounds": rounds, "steps_per_round": steps, "default": {"precision": default[0], "channels_last": default[1]},
            "batch": {"source": 64, "target": 64}, "image_size": 64, "backbone": "convnet (width 32)",
            "rows": rows, "ratios": {k: (round(v, 3) if isinstance(v, float) else
                                         {n: {a: round(b, 3) for a, b in d.items()} for n, d in v.items()})
                                     for k, v in ratios.items()},
            "engine_check": check}


def engine_check(bench: Bench, steps: int) -> dict[str, float]:
    """The same step through PhaseRunner.run_phase itself (samplers, logging, the loop), against
    the harness's per-step median: the harness measures what the engine runs."""
    from facedapt.engine.trainer import PhaseSpec

    with tempfile.TemporaryDirectory() as tmp:
        spec = PhaseSpec("adapt", bench.source, bench.target, steps, Path(tmp), 0)
        c0 = time.process_time()
        info = bench.runner.run_phase(spec)
        cpu = time.process_time() - c0
    return {"steps": steps, "run_phase_step_s": round(info["seconds"] / steps, 4),
            "run_phase_cpu_step_s": round(cpu / steps, 4)}


# ----------------------------------------------------------------------------- 2. generation
def generation(quick: bool) -> list[dict]:
    from synthetic_rate import measure

    return measure([64] if quick else [64, 112], [torch.get_num_threads()], subjects=6, repeats=3 if quick else 5)


# ----------------------------------------------------------------------------- children
def child(kind: str, spec: dict) -> None:
    """Runs in a fresh process; prints one JSON line."""
    import_s = time.perf_counter() - _STARTED
    threads_from_env()
    out: dict[str, Any] = {"import_s": round(import_s, 2)}
    if kind == "first_step":
        t0 = time.perf_counter()
        bench = Bench(spec["recipe"], spec["overrides"], phase="source")
        out["setup_s"] = round(time.perf_counter() - t0, 2)  # data (generated when cold), split, build
        t0 = time.perf_counter()
        bench.step()
        out["first_step_s"] = round(time.perf_counter() - t0, 2)
        out["to_first_step_s"] = round(time.perf_counter() - _STARTED, 2)
    elif kind == "memory":
        bench = Bench(spec["recipe"], spec["overrides"])
        out["rss_built_mib"] = round(maxrss_mib(), 1)
        for _ in range(spec["steps"]):
            bench.step()
        out["peak_rss_mib"] = round(maxrss_mib(), 1)
        if torch.cuda.is_initialized():
            out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    elif kind == "materialize":
        import facedapt
        from facedapt.engine.build import materialize_dataset
        from facedapt.plugin_manager import get_plugins

        r = facedapt.load_recipe(str(ROOT / "recipes" / "dann.yaml"), spec["overrides"]).recipe
        materialize_dataset(get_plugins(r.plugins.block), r.data.dataset, r.data.on_bad_image)
    elif kind == "run":
        import facedapt

        with tempfile.TemporaryDirectory() as tmp:
            loaded = facedapt.load_recipe(str(ROOT / "recipes" / "dann.yaml"), spec["overrides"])
            res = facedapt.run(loaded, run_dir=str(Path(tmp) / "run"))
        out.update(timing={k: v for k, v in res["timing"].items() if k != "per_subject_adapt"},
                   adapt_s_per_subject=round(statistics.fmean(res["timing"]["per_subject_adapt"].values()), 2),
                   peak_rss_mib=round(maxrss_mib(), 1), target_accuracy=res["target_accuracy"])
    print("RESULT " + json.dumps(out), flush=True)


def spawn(kind: str, spec: dict, env: dict | None = None) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", kind, "--spec", json.dumps(spec)], check=False,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"child {kind} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {**json.loads(lines[-1][7:]), "process_wall_s": round(wall, 2)}


# ----------------------------------------------------------------------------- 3. first step
def first_step() -> dict[str, Any]:
    spec = {"recipe": "pada", "overrides": [f"device={DEVICE}"]}
    with tempfile.TemporaryDirectory() as cache:
        env = {"FACEDAPT_CACHE": cache}
        cold = spawn("first_step", spec, env)
        warm = spawn("first_step", spec, env)
    return {"recipe": "pada (as bundled: 36 subjects, 48x48, batch 64)", "cold": cold, "warm": warm}


# ----------------------------------------------------------------------------- 4. memory
def memory(quick: bool) -> dict[str, dict]:
    names = ["source_only", "dann", "pada"] if quick else ["source_only", "dann", "cdan", "pada", "pada no reconstruction"]
    out = {}
    for n in names:
        recipe, extra = METHODS[n]
        out[n] = spawn("memory", {"recipe": recipe, "overrides": recipe_overrides("bf16", True, extra=extra, device=DEVICE),
                                  "steps": 3})
        print(f"  memory {n}: {out[n]['peak_rss_mib']} MiB", file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------- 5. growth
def growth(quick: bool) -> dict[str, list[dict]]:
    steps = 5 if quick else 10
    base = [f"device={DEVICE}", "eval.leakage_probe=false", "train.checkpoint_every=0", "train.eval_every=0",
            f"train.source_steps={steps}", f"train.steps={steps}"]
    axes = {
        "targets": [({"targets": n}, [f"data.target_subjects={{first: {n}}}"]) for n in ((1, 2) if quick else (1, 2, 4))],
        "images_per_subject": [({"images_per_subject": 91 * k}, ["data.target_subjects={first: 1}",
                                                                  f"data.dataset.intensity_samples={k}"])
                               for k in ((1, 2) if quick else (1, 2, 4))],
        "input_size": [({"input_size": s}, ["data.target_subjects={first: 1}", f"data.dataset.image_size={s}"])
                       for s in ((48, 64) if quick else (48, 64, 96))],
    }
    out: dict[str, list[dict]] = {}
    for axis, points in axes.items():
        out[axis] = []
        for label, ov in points:
            spawn("materialize", {"overrides": ov})  # generation is section 3's subject, not this one's
            res = spawn("run", {"overrides": [*base, *ov]})
            res.update(label)
            out[axis].append(res)
            print(f"  growth {axis} {label}: {res['timing']['total']} s, {res['peak_rss_mib']} MiB", file=sys.stderr,
                  flush=True)
    return {"steps": steps, "recipe": "dann", "axes": out}


# ----------------------------------------------------------------------------- report
def render(rep: dict) -> str:
    tp = rep["throughput"]
    rows = tp["rows"]
    lines = [(f"Measured {rep['date']} on {rep['machine']}; {rep['threads']} thread(s); load average (1 min) "
             f"{rep['load_avg_1min_start']} at the start, {rep['load_avg_1min_end']} at the end; "
             f"`{rep['command']}` ({rep['seconds'] / 60:.1f} min)."), "",
             (f"### Training throughput (img/s, median of {tp['rounds'] * tp['steps_per_round']} steps per cell, "
             f"all cells round-robin in one process)"), "",
             ("Batch 64 source + 64 target images (source-only: 64 source images; it does not adapt), 64x64 synthetic "
             "faces, convnet backbone; img/s counts every image of the step. `cl` = channels_last. The last two columns "
             "are the median milliseconds per step at the default (bf16, channels_last): wall clock, and process CPU time "
             "(the step's own work on one thread, less sensitive to other jobs)."), ""]
    cells = []
    for n in METHODS:
        d = rows[key(n, "bf16", True)]
        cells.append([n, *(f"{rows[key(n, p, cl)]['img_per_s']:.0f}" if key(n, p, cl) in rows else "-"
                           for p, cl in layouts()), f"{1000 * d['step_s']:.0f}", f"{1000 * d['cpu_step_s']:.0f}"])
    lines.append(markdown(["method", *(f"{p}{' cl' if cl else ''}" for p, cl in layouts()), "ms/step (wall)",
                           "ms/step (CPU)"], cells))
    r = tp["ratios"]
    cells = [["pada step / dann step", f"{r['pada_over_dann_wall']:.2f}", f"{r['pada_over_dann_cpu']:.2f}", "<= 1.6"],
             ["dann default / dann plain fp32 (throughput)", f"{r['dann_default_over_plain_wall']:.2f}",
              f"{r['dann_default_over_plain_cpu']:.2f}", ">= 1.3"]]
    cells += [[f"{n} / pada", f"{v['over_pada_wall']:.2f}", f"{v['over_pada_cpu']:.2f}", "(switch cost)"]
              for n, v in r["switches"].items()]
    cells += [[f"{n} / {n.split(',')[0]}", f"{v['over_plain_adam_wall']:.2f}", f"{v['over_plain_adam_cpu']:.2f}",
               "(optimizer option)"] for n, v in sorted(r["adam_foreach"].items())]
    lines.append(markdown(["ratio (default precision and layout)", "wall", "CPU", "goal"], cells))
    ec = tp["engine_check"]
    dk = rows[key("dann", "bf16", True)]
    lines += [(f"Check: `PhaseRunner.run_phase` for the DANN default, {ec['steps']} steps: {1000 * ec['run_phase_step_s']:.0f} ms "
              f"per step wall, {1000 * ec['run_phase_cpu_step_s']:.0f} ms CPU (harness: {1000 * dk['step_s']:.0f} / "
              f"{1000 * dk['cpu_step_s']:.0f} ms)."), ""]
    lines.append(markdown(["image size", "threads", "faces", "median s", "faces/s", "CPU s"],
                          [[f"{g['image_size']}x{g['image_size']}", g["threads"], g["faces"], g["seconds_median"],
                            f"{g['faces_per_s']:.0f}", g["cpu_seconds_median"]] for g in rep["generation"]],
                          "### Synthetic generation rate"))
    fs = rep["first_step"]
    lines.append(markdown(["dataset cache", "process start to first step done, s", "of which imports",
                           "data + split + build", "first step"],
                          [[label, fs[label]["to_first_step_s"], fs[label]["import_s"], fs[label]["setup_s"],
                            fs[label]["first_step_s"]] for label in ("cold", "warm")],
                          "### Time to the first training step (default recipe, fresh process)"))
    lines.append(markdown(["method", "after building, MiB", "peak after the steps, MiB", "peak GPU memory, MiB"],
                          [[n, f"{m['rss_built_mib']:.0f}", f"{m['peak_rss_mib']:.0f}",
                            f"{m['peak_gpu_mib']:.0f}" if "peak_gpu_mib" in m else "-"]
                           for n, m in rep["memory"].items()],
                          "### Peak memory (resident set, a fresh process per method, default precision)"))
    gr = rep["growth"]
    cells = [[axis.replace("_", " "), p[axis], f"{p['timing']['data']:.2f}", f"{p['timing']['source']:.1f}",
              f"{p['adapt_s_per_subject']:.1f}", f"{p['timing']['total']:.1f}", f"{p['peak_rss_mib']:.0f}"]
             for axis, points in gr["axes"].items() for p in points]
    lines.append(markdown(["varied", "value", "data load s", "source training s", "adaptation s per target", "total s",
                           "peak RSS MiB"], cells,
                          f"### Growth (whole `{gr['recipe']}` run, {gr['steps']} source + {gr['steps']} adaptation "
                          "steps, a fresh process per point, dataset cache warm)"))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer configurations and steps (about 5 minutes)")
    ap.add_argument("--sections", default="throughput,generation,first_step,memory,growth")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where the steps run (cuda adds fp16 columns and peak GPU memory)")
    ap.add_argument("--out", type=Path, help="results file (default benchmarks/results/speed.json, speed-cuda.json)")
    ap.add_argument("--docs-only", action="store_true", help="only refresh docs/benchmarks.md from the results files")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, json.loads(args.spec))
        return
    if args.docs_only:
        update_docs()
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available here")
    global DEVICE
    DEVICE = args.device
    args.out = args.out or RESULTS / ("speed.json" if DEVICE == "cpu" else f"speed-{DEVICE}.json")
    threads = threads_from_env()
    started = time.perf_counter()
    rep: dict[str, Any] = {"date": datetime.date.today().isoformat(), "machine": machine(), "threads": threads,
                           "command": " ".join(["python benchmarks/speed.py", *sys.argv[1:]]),
                           "load_avg_1min_start": round(os.getloadavg()[0], 2)}
    sections = args.sections.split(",")
    for name, fn in (("throughput", throughput), ("generation", generation), ("first_step", lambda q: first_step()),
                     ("memory", memory), ("growth", growth)):
        if name in sections:
            t0 = time.perf_counter()
            print(f"{name} ...", file=sys.stderr, flush=True)
            rep[name] = fn(args.quick)
            print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    rep["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    rep["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rep, indent=2) + "\n")
    if all(s in rep for s in ("throughput", "generation", "first_step", "memory", "growth")):
        md = render(rep)
        args.out.with_suffix(".md").write_text(md)
        print(md)
        update_docs()


if __name__ == "__main__":
    main()
