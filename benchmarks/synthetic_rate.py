"""Synthetic face generation rate (faces/s) at 64x64 and 112x112, median of repeats.

Prints a markdown table and writes benchmarks/results/synthetic_rate.json. Each row also
records the median process CPU time and the load average, because on a shared machine a
second torch thread often waits for a core other jobs hold (compare --threads 1,2).
Usage: python benchmarks/synthetic_rate.py [--subjects N] [--repeats R] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from facedapt_plugins.datasets.synthetic import GENERATOR_VERSION, SyntheticFaces

ROOT = Path(__file__).resolve().parents[1]


def measure(sizes: list[int], threads: list[int], subjects: int = 6, repeats: int = 5) -> list[dict]:
    """Generation rate rows, one per (image size, thread count): median wall and CPU seconds of
    ``repeats`` generations of ``subjects`` subjects, after one warm-up generation."""
    rows = []
    for size in sizes:
        ds = SyntheticFaces("default", image_size=size, num_subjects=subjects)
        n = len(ds)
        for th in threads:
            torch.set_num_threads(th)
            ds.load()  # warm-up: first-call allocations are not the generator's rate
            wall, cpu, load = [], [], []
            for _ in range(repeats):
                c0, t0 = time.process_time(), time.perf_counter()
                ds.load()
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                load.append(os.getloadavg()[0])
            median = statistics.median(wall)
            rows.append({"image_size": size, "channels": 3, "faces": n, "threads": th,
                         "seconds_median": round(median, 3), "faces_per_s": round(n / median, 1),
                         "seconds_min": round(min(wall), 3), "seconds_max": round(max(wall), 3),
                         "cpu_seconds_median": round(statistics.median(cpu), 3),
                         "load_average_1min": round(statistics.median(load), 1), "repeats": repeats})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=6, help="subjects per run (x 7 expr x 2 x 13 views)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 1}", help="comma-separated thread counts")
    parser.add_argument("--sizes", default="64,112", help="comma-separated image sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/synthetic_rate.json")
    args = parser.parse_args()
    threads = sorted({int(t) for t in args.threads.split(",")})
    sizes = [int(s) for s in args.sizes.split(",")]

    rows = measure(sizes, threads, args.subjects, args.repeats)
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "torch": torch.__version__, "generator": GENERATOR_VERSION, "rows": rows,
    }
    print("| image size | threads | faces | median s (min-max) | faces/s | CPU s | load avg |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['image_size']}x{r['image_size']} | {r['threads']} | {r['faces']} | {r['seconds_median']} "
              f"({r['seconds_min']}-{r['seconds_max']}) | {r['faces_per_s']:.0f} | {r['cpu_seconds_median']} "
              f"| {r['load_average_1min']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
