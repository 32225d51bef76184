"""The README's main job (`facedapt run recipes/pada.yaml`), timed on both kinds of CPU.

    python benchmarks/main_job.py                  # both kinds, one run each (about 6 minutes)
    python benchmarks/main_job.py --kinds avx2     # only the CPU without fast bf16

Kinds:
- ``native``: the recipe as bundled (``train.precision: auto`` picks bf16 on a CPU with AMX or
  AVX512-BF16, fp32 elsewhere);
- ``avx2``: a CPU without fast bf16, approximated on any x86 machine: oneDNN limited to AVX2
  (``ONEDNN_MAX_CPU_ISA=AVX2``) and ``train.precision=fp32`` (what ``auto`` picks there).

Each run is a fresh process with an empty dataset cache (the faces are generated, as on a fresh
clone), so the time is what a new user waits after installing. Recorded per kind: wall and CPU
time, the engine's own phase times (results.json ``timing``), and the adaptation result (before,
after, gain, people improved), so that a faster setting cannot hide a worse model. Runs one at a
time: a second job on a 2-core machine would take cores from the first.

Writes benchmarks/results/main_job.{json,md} and refreshes docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import ROOT, machine, update_docs

from facedapt.engine.precision import cpu_has_fast_bf16
from facedapt.engine.results import summary_lines
from facedapt.tables import markdown

RESULTS = ROOT / "benchmarks" / "results"
KINDS: dict[str, tuple[dict[str, str], list[str]]] = {
    "native": ({}, []),
    "avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, ["train.precision=fp32"]),
}


def run_kind(kind: str, recipe: str, work: Path, extra: list[str] | None = None) -> dict[str, Any]:
    env_extra, overrides = KINDS[kind]
    overrides = [*overrides, *(extra or [])]
    run_dir = work / kind
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, **env_extra, "FACEDAPT_CACHE": cache}
        cmd = [sys.executable, "-m", "facedapt", "-q", "run", recipe, *overrides, "--run-dir", str(run_dir), "--no-report"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"main job ({kind}) failed with exit code {proc.returncode}:\n{proc.stderr[-2000:]}")
    res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    return {"kind": kind, "command": " ".join(["facedapt run", recipe, *overrides]), "env": env_extra,
            "precision": res.get("precision"), "wall_s": round(wall, 1),
            "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
            "timing": res.get("timing", {}), "accuracy": res["target_accuracy"], "source_accuracy": res["source_accuracy"],
            "gain": res["gain"], "subjects_improved": res["subjects_improved"], "targets": len(res["per_subject"]),
            "load_avg_1min": round(os.getloadavg()[0], 2), "summary": summary_lines(res)}


def table(rows: list[dict[str, Any]]) -> str:
    head = ["CPU kind", "precision", "wall (min)", "CPU (min)", "data s", "source s", "adapt s",
            "before", "after", "gain", "improved"]
    body = [[r["kind"], r["precision"], f"{r['wall_s'] / 60:.1f}", f"{r['cpu_s'] / 60:.1f}",
             f"{r['timing'].get('data', 0):.0f}", f"{r['timing'].get('source', 0):.0f}",
             f"{r['timing'].get('adapt', 0):.0f}", f"{100 * r['source_accuracy']:.1f}",
             f"{100 * r['accuracy']:.1f}", f"{100 * r['gain']:+.1f}", f"{r['subjects_improved']}/{r['targets']}"]
            for r in rows]
    return markdown(head, body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", nargs="*", choices=sorted(KINDS), default=["native", "avx2"])
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "pada.yaml"))
    ap.add_argument("--workdir", type=Path, help="run directories (default: a temporary folder)")
    ap.add_argument("overrides", nargs="*", help="recipe overrides for every run (the README's job has none)")
    args = ap.parse_args()
    started = datetime.datetime.now()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        rows = []
        for kind in args.kinds:
            print(f"main job, {kind} ...", file=sys.stderr, flush=True)
            rows.append(run_kind(kind, args.recipe, work, args.overrides))
            print(f"  {rows[-1]['wall_s'] / 60:.1f} min", file=sys.stderr, flush=True)
    info = {"date": started.date().isoformat(), "machine": machine(), "fast_bf16": cpu_has_fast_bf16(),
            "load_avg_1min_start": round(load0, 2), "command": "python benchmarks/main_job.py " + " ".join(sys.argv[1:]),
            "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "main_job.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    fast = "with fast bf16 (AVX512-BF16 or AMX)" if info["fast_bf16"] else "without fast bf16"
    md = (f"Measured {info['date']} on {info['machine']} ({fast}); load average (1 min) {info['load_avg_1min_start']} "
          f"at the start; `{info['command'].strip()}`. Each run: a fresh process, an empty dataset cache (faces "
          "generated), no report; `avx2` = `ONEDNN_MAX_CPU_ISA=AVX2` and `train.precision=fp32`. Before/after: "
          "accuracy of the source model and of the adapted model on the same images, over the recipe's 4 people.\n\n"
          + table(rows))
    (RESULTS / "main_job.md").write_text(md + "\n", encoding="utf-8")
    update_docs()
    print(md)


if __name__ == "__main__":
    main()
