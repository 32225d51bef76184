"""Long-run memory check: 2,000 training steps with no growth in resident memory.

Runs the pada recipe on the synthetic ``tiny`` preset (small batch, periodic checkpoints
with pruning, deterministic mode) for ``--steps`` source-training steps. A lifecycle hook
(``facedapt_on_step_end``, called every ``train.log_every`` steps) samples the resident set
size from /proc/self/statm every ``--every`` steps. Prints the table and writes
benchmarks/results/long_run.json with the least-squares slope of RSS over the second half
of the run (the first half includes allocator warm-up), in MiB per 1,000 steps.

Usage: python benchmarks/long_run.py [--steps 2000] [--every 100] [--batch 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from facedapt import hookimpl
from facedapt.engine.run import Runner
from facedapt.plugin_manager import load_plugins
from facedapt.recipe.load import load_recipe

ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")
#: Growth below this many MiB per 1,000 steps counts as none (allocator noise).
TOLERANCE_MIB_PER_1000 = 1.0


def rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20


class RssSampler:
    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        self.started = time.perf_counter()

    @hookimpl
    def facedapt_on_step_end(self, run: Any, step: int, metrics: dict[str, Any]) -> None:
        if run.phase == "source":
            self.samples.append({"step": step, "rss_mib": round(rss_mib(), 2),
                                 "seconds": round(time.perf_counter() - self.started, 2)})


def slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100, help="sample RSS every N steps (train.log_every)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/long_run.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    overrides = [
        "data.dataset={name: synthetic, preset: tiny}", "data.target_subjects={first: 1}",
        f"train.source_steps={args.steps}", "train.steps=1", f"train.batch_size={args.batch}",
        f"train.log_every={args.every}", "train.checkpoint_every=250", "train.keep_checkpoints=2",
        "train.eval_every=0", "train.precision=fp32", "train.deterministic=true", "eval.leakage_probe=false",
    ]
    loaded = load_recipe(ROOT / "recipes" / "pada.yaml", overrides)
    sampler = RssSampler()
    with tempfile.TemporaryDirectory(prefix="facedapt-long-run-") as tmp:
        Runner(loaded, run_dir=Path(tmp) / "run", plugins=load_plugins(extra=[sampler])).execute()

    samples = sampler.samples
    half = [(s["step"], s["rss_mib"]) for s in samples if s["step"] > args.steps // 2]
    per_1000 = slope(half) * 1000
    grew = per_1000 > TOLERANCE_MIB_PER_1000
    print(f"{'step':>6} {'RSS MiB':>9} {'seconds':>8}")
    for s in samples:
        print(f"{s['step']:>6} {s['rss_mib']:>9.1f} {s['seconds']:>8.1f}")
    print(f"RSS slope over steps {args.steps // 2 + 1}-{args.steps}: {per_1000:+.3f} MiB per 1,000 steps "
          f"({'GROWTH' if grew else 'no growth'}; tolerance {TOLERANCE_MIB_PER_1000} MiB per 1,000 steps)")

    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "torch": str(torch.__version__), "threads": args.threads,
        "recipe": "recipes/pada.yaml", "overrides": overrides,
        "steps": args.steps, "sample_every": args.every,
        "rss_first_mib": samples[0]["rss_mib"], "rss_last_mib": samples[-1]["rss_mib"],
        "rss_max_mib": max(s["rss_mib"] for s in samples),
        "slope_second_half_mib_per_1000_steps": round(per_1000, 4),
        "tolerance_mib_per_1000_steps": TOLERANCE_MIB_PER_1000, "growth": grew,
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    raise SystemExit(1 if grew else 0)


if __name__ == "__main__":
    main()
