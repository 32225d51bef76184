"""Choose the adaptation defaults on development people, never on the people a table reports.

Development people come from a dataset seed that no reported row uses
(``compare.DEV_DATASET_SEED``), in the comparison's quick configuration and holdout (each person
adapted on half its captures, unlabelled, and scored on the other half; scoring a development
person with its labels is what development people are for). Per method, one source model is
trained (by its first candidate's run); every other candidate adapts from it (candidates differ
in adaptation-time settings alone). A coordinate search, one setting at a time:

1. adaptation steps (``STEPS``) at the recipe's learning rate and adversarial weight;
2. at the chosen steps, the adaptation learning rate x0.3 and x3, and the adversarial weight
   x0.3 and x3 (for the methods in ``SECOND_STAGE``; the others keep the recipe's values).

Differences of a point or two between candidates are noise at this size, so a stage does not
simply keep the best mean (the one-standard-error rule): the steps stage keeps the fewest steps
whose mean accuracy over the development people is within one standard error (of the paired
per-person differences) of the best candidate's; the second stage changes the recipe's value
only for a candidate that beats the kept one by more than one standard error. Writes
benchmarks/results/choose_defaults.{json,md}; finished runs are kept under --workdir and skipped.

    python benchmarks/choose_defaults.py --jobs 2
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import DEV_DATASET_SEED, LABELS, _machine, configuration, people, run  # noqa: E402

import facedapt  # noqa: E402
from facedapt.plugin_manager import get_plugins  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["pada", "dann"]


def current(method: str) -> dict[str, float]:
    """The method recipe's defaults: adaptation steps, learning rate and adversarial weight."""
    r = facedapt.load_recipe(str(ROOT / "recipes" / f"{method}.yaml")).recipe
    factory = get_plugins().registry("methods").get(r.method.name)
    weight = r.method.kwargs.get("adv_weight", inspect.signature(factory).parameters["adv_weight"].default)
    return {"steps": r.train.steps, "lr": float(r.train.adapt_optimizer.kwargs["lr"]), "adv_weight": float(weight)}


#: Steps tried per method in the first stage (DANN's 200 is left out to keep the search within
#: about half an hour on 2 cores).
STEPS = {"pada": (50, 100, 200), "dann": (50, 100)}
#: Methods whose learning rate and adversarial weight are searched too.
SECOND_STAGE = ("pada",)


def first_stage(method: str, base: dict[str, float]) -> list[dict[str, float]]:
    return [{**base, "steps": s} for s in STEPS.get(method, (50, 100, 200))]


def second_stage(best: dict[str, float]) -> list[dict[str, float]]:
    """The learning rate and the adversarial weight varied alone around ``best``."""
    out = [{**best, "lr": float(f"{best['lr'] * f:.3g}")} for f in (0.3, 3.0)]
    return out + [{**best, "adv_weight": float(f"{best['adv_weight'] * f:.3g}")} for f in (0.3, 3.0)]


def behind(a: dict[str, Any], b: dict[str, Any]) -> float:
    """How far ``b`` trails ``a`` beyond one standard error of their paired per-person
    differences (positive: ``a`` is better by more than one standard error)."""
    diffs = [a["per_person"][k] - b["per_person"][k] for k in a["per_person"]]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return statistics.fmean(diffs) - se


def development_arguments(ap: argparse.ArgumentParser, script: str) -> None:
    """The options every choice on development people takes; runs under benchmarks/runs/SCRIPT,
    results in benchmarks/results/SCRIPT.{json,md}."""
    ap.add_argument("--targets", type=int, default=8, help="development people")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "runs" / script)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / script)
    ap.add_argument("overrides", nargs="*", help="extra recipe overrides for every run")


def development_overrides(args: argparse.Namespace, *extra: str, seed: int = DEV_DATASET_SEED) -> list[str]:
    """Every development run's overrides: the development people of ``seed`` (run and dataset
    seed), the comparison's quick configuration, then ``extra`` and the command line's."""
    return [*people(seed, args.targets, seed), *configuration(False)["overrides"], *extra, *args.overrides]


def name(c: dict[str, float]) -> str:
    return f"steps{int(c['steps'])}-lr{c['lr']:g}-w{c['adv_weight']:g}"


def overrides(c: dict[str, float]) -> list[str]:
    # Mantissa with a point: YAML reads a bare 3e-05 as a string.
    return [f"train.steps={int(c['steps'])}", f"train.adapt_optimizer.lr={c['lr']:.2e}",
            f"method.adv_weight={c['adv_weight']:.3e}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="*", default=METHODS)
    development_arguments(ap, "choose_defaults")
    args = ap.parse_args()
    started = time.perf_counter()
    dev = development_overrides(args)
    report: dict[str, Any] = {"date": date.today().isoformat(), "machine": _machine(),
                              "command": "python benchmarks/choose_defaults.py " + " ".join(sys.argv[1:]),
                              "dataset_seed": DEV_DATASET_SEED, "targets": args.targets, "overrides": dev,
                              "methods": {}}
    with ThreadPoolExecutor(args.jobs) as pool:
        def evaluate(m: str, c: dict[str, float], base_dir: Path | None) -> dict[str, Any]:
            warm = [] if base_dir is None else [f"train.init_from={base_dir / 'source' / 'model.pt'}",
                                                "train.source_steps=0"]
            res = run(m, args.workdir / m / name(c), [*dev, *warm, *overrides(c)], args.threads)
            return {**c, "accuracy": res["target_accuracy"], "source_accuracy": res.get("source_accuracy"),
                    "per_person": {sid: v["accuracy"] for sid, v in res["per_subject"].items()}}

        def search(m: str) -> dict[str, Any]:
            first, *rest = first_stage(m, current(m))
            base_dir = args.workdir / m / name(first)
            # The first candidate trains the source model; the others wait for it.
            rows = [evaluate(m, first, None)]
            rows += list(pool.map(lambda c: evaluate(m, c, base_dir), rest))
            top = max(rows, key=lambda r: r["accuracy"])
            best = next(r for r in sorted(rows, key=lambda r: r["steps"]) if behind(top, r) <= 0)
            stages = [{"varied": "steps", "candidates": rows, "chosen": best}]
            if m in SECOND_STAGE:
                more = list(pool.map(lambda c: evaluate(m, c, base_dir), second_stage(best)))
                better = [r for r in more if behind(r, best) > 0]
                best = max(better, key=lambda r: r["accuracy"]) if better else best
                stages.append({"varied": "learning rate, adversarial weight", "candidates": more, "chosen": best})
            return {"current": current(m), "stages": stages,
                    "chosen": {k: best[k] for k in ("steps", "lr", "adv_weight")}, "chosen_accuracy": best["accuracy"]}

        # Methods searched side by side; inside one, the stages run in order.
        with ThreadPoolExecutor(len(args.methods)) as outer:
            found = dict(zip(args.methods, outer.map(search, args.methods)))
        report["methods"] = found
    report["seconds"] = round(time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    md = render(report)
    args.out.with_suffix(".md").write_text(md)
    print(md)


def render(rep: dict[str, Any]) -> str:
    out = [f"Defaults chosen on development people ({rep['date']}, {rep['machine']}): dataset seed "
           f"{rep['dataset_seed']}, {rep['targets']} people, each adapted on half its captures and scored on the "
           f"other half; `{rep['command']}` ({rep['seconds'] // 60} min).", ""]
    for m, r in rep["methods"].items():
        cands = [c for st in r["stages"] for c in st["candidates"]]
        out += [f"{LABELS.get(m, m).strip()}: accuracy % by candidate (mean over people; before adaptation "
                f"{100 * statistics.fmean(c['source_accuracy'] for c in cands):.1f})", "",
                "| stage | steps | adaptation lr | adversarial weight | accuracy % | |", "|---|---|---|---|---|---|"]
        for i, st in enumerate(r["stages"], 1):
            for c in st["candidates"]:
                mark = "kept" if all(c[k] == st["chosen"][k] for k in ("steps", "lr", "adv_weight")) else ""
                out.append(f"| {i} | {int(c['steps'])} | {c['lr']:g} | {c['adv_weight']:g} | {100 * c['accuracy']:.1f} | {mark} |")
        ch = r["chosen"]
        out += ["", f"Chosen: {int(ch['steps'])} steps, learning rate {ch['lr']:g}, adversarial weight "
                f"{ch['adv_weight']:g} ({100 * r['chosen_accuracy']:.1f}%).", ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
