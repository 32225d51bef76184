"""Synthetic face generation rate (faces/s) at 64x64 and 112x112, median of repeats.

Prints a markdown table and writes benchmarks/results/synthetic_rate.json.
Usage: python benchmarks/synthetic_rate.py [--subjects N] [--repeats R] [--threads T]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=6, help="subjects per run (x 7 expr x 2 x 13 views)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/synthetic_rate.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for size in (64, 112):
        ds = SyntheticFaces("default", image_size=size, num_subjects=args.subjects)
        n = len(ds)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ds.load()
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        rows.append({"image_size": size, "channels": 3, "faces": n, "seconds_median": round(median, 3),
                     "faces_per_s": round(n / median, 1), "repeats": args.repeats})
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "torch": torch.__version__, "threads": args.threads, "generator": GENERATOR_VERSION, "rows": rows,
    }
    print("| image size | faces | median s | faces/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['image_size']}x{r['image_size']} | {r['faces']} | {r['seconds_median']} | {r['faces_per_s']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
