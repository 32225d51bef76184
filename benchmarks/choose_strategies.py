"""Choose how strongly each of the paper's strategies acts, on development people under pose shift.

The cross-adversarial terms, the reconstruction and the pose_warp augmentation act during source
training too, so unlike the adaptation-time settings (benchmarks/choose_defaults.py) every
candidate trains its own source model (those in ``ADAPTATION_TIME`` adapt from the current
recipe's). Development people come from ``compare.DEV_DATASET_SEED`` (no reported table uses
it), in the comparison's quick configuration and holdout, under the protocol the paper is about (``--protocol pose_shift``: source people seen within 30 degrees of
frontal, target people at every view).

One setting at a time, each against the recipe as it stands (``current``): a candidate replaces
the recipe's value only where it beats the current recipe by more than one standard error of the
paired per-person differences (the best such candidate of a setting wins); differences of a point
or two are noise at this size. Settings chosen for cost (``RULES``) take their cheapest
candidate not behind the current recipe by more than one standard error; settings chosen for
disentanglement one not behind it whose fresh probe reads less pose from
f_e. The settings chosen separately are then run together (``combined``) and kept only if that
run is not behind the current recipe by more than one standard error. With ``--dev-seeds N``
every candidate runs at N development seeds (new people and new source models each) and the
standard errors are over all (seed, person) pairs: a candidate that trains its own source model
differs from the recipe by that model's draw too, which one seed's people cannot show. Candidates come in rounds
(``ROUNDS``), each against the recipe the rounds before it made. Writes benchmarks/results/choose_strategies.{json,md} (round 1) or
choose_strategies-roundN[-Mseeds].{json,md}; finished runs are kept under --workdir and skipped.

    python benchmarks/choose_strategies.py --round 3 --jobs 2
    python benchmarks/choose_strategies.py --round 3 --dev-seeds 3 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import update_docs  # noqa: E402
from choose_defaults import behind, development_arguments, development_overrides  # noqa: E402
from compare import DEV_DATASET_SEED, PROTOCOLS, _machine, run  # noqa: E402

from facedapt.compare import pair_key  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
POSE_WARP = "{name: pose_warp, max_degrees: 30, p: 0.5}"
#: round -> setting -> candidates (label -> overrides of the pada recipe as it stood then).
#: Round 1 (the recipe before: cross_mode means, rec_weight 0.5, flips only): the cross terms'
#: weights are their modes' defaults x0.3 (``means`` 1.0, ``confusion`` 0.1); pose_warp stops at
#: 30 degrees, where its warp still keeps the face whole (it folds beyond about 38).
#: Round 2 (the recipe round 1 made): the pose branch and the cross terms where the shift is,
#: on the target's views rather than the source's narrow range.
#: Round 3 (the recipe round 2 made: 200 adaptation steps at lr 1e-4): the same adaptation budget
#: (steps x learning rate) in fewer steps, for a shorter job; and the pose encoder on a backbone of
#: its own, which keeps the pose supervision out of the features f_e is read from.
#: Round 4 (the recipe round 3 made: the own pose backbone, as wide as the shared one, which made
#: the pada step 2.8 times DANN's): a narrower pose backbone, chosen for cost; it still keeps the
#: pose supervision out of f_e's trunk. Meant for several development seeds (``--dev-seeds 3``).
ROUNDS: dict[int, dict[str, dict[str, list[str]]]] = {
    1: {
        "cross terms": {
            "cross_weight 0.3": ["method.cross_weight=0.3"],
            "cross_mode confusion": ["method.cross_mode=confusion"],
        },
        "reconstruction": {
            "rec_weight 0.15": ["method.rec_weight=0.15"],
            "rec_weight 1.5": ["method.rec_weight=1.5"],
            "target cross-pose pairs": ["method.target_cross_pose=true"],
            "target cross-pose pairs, 200 steps": ["method.target_cross_pose=true", "train.steps=200"],
        },
        # The control for the row above: the longer adaptation alone.
        "adaptation steps": {"200 steps": ["train.steps=200"]},
        "pose_warp": {
            "pose_warp 30 degrees, p 0.5": [f"data.augment=[{{name: flip, p: 0.5}}, {POSE_WARP}]"],
        },
    },
    2: {
        "cross terms": {
            "cross terms on the target": ["method.cross_target=true"],
            "cross terms on the target, 200 steps": ["method.cross_target=true", "train.steps=200"],
        },
        "adaptation steps": {"200 steps": ["train.steps=200"]},
        "pose discriminator": {
            "pose discriminator conditioned on the view": ["method.pose_conditional=true"],
            "no pose discriminator": ["method.adapt_pose_features=false"],
        },
    },
    3: {
        "adaptation schedule": {  # cheapest first
            "50 steps, adaptation lr 4e-4": ["train.steps=50", "train.adapt_optimizer.lr=0.0004"],
            "100 steps, adaptation lr 2e-4": ["train.steps=100", "train.adapt_optimizer.lr=0.0002"],
        },
        "pose backbone": {"own pose backbone": ["method.shared_trunk=false"]},
    },
    4: {
        "pose backbone width": {  # cheapest first
            "pose backbone width 8": ["model.pose_backbone={name: convnet, width: 8}"],
            "pose backbone width 16": ["model.pose_backbone={name: convnet, width: 16}"],
        },
    },
}

#: Settings chosen by a rule other than ``better`` (see ``choose``): for cost, the first (cheapest)
#: candidate not behind the current recipe by more than one standard error; for disentanglement,
#: one not behind it whose fresh probe on held-out people reads less pose from f_e.
RULES = {"adaptation schedule": "cheaper", "pose backbone": "disentangling", "pose backbone width": "cheaper"}


#: Candidates that differ from the recipe in adaptation-time terms alone: they adapt from the
#: current recipe's source model (target pairs exist only where a target is at hand).
ADAPTATION_TIME = {"target cross-pose pairs", "target cross-pose pairs, 200 steps", "200 steps",
                   "cross terms on the target", "cross terms on the target, 200 steps",
                   "pose discriminator conditioned on the view", "no pose discriminator",
                   "50 steps, adaptation lr 4e-4", "100 steps, adaptation lr 2e-4"}


def slug(label: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in label).strip("-").replace("--", "-")


def choose(current: dict[str, Any], candidates: list[dict[str, Any]], rule: str = "better") -> dict[str, Any] | None:
    """The candidate the setting's rule picks, else None. ``better``: the most accurate that beats
    ``current`` by more than one standard error; ``cheaper`` (candidates cheapest first): the first
    not behind ``current`` by more than one; ``disentangling``: of those not behind, the one whose
    probe reads least pose from f_e, if less than from ``current``'s."""
    if rule == "cheaper":
        return next((c for c in candidates if behind(current, c) <= 0), None)
    if rule == "disentangling":
        ok = [c for c in candidates if behind(current, c) <= 0
              and c["pose_from_expression"] < current["pose_from_expression"]]
        return min(ok, key=lambda c: c["pose_from_expression"]) if ok else None
    better = [c for c in candidates if behind(c, current) > 0]
    return max(better, key=lambda c: c["accuracy"]) if better else None


def pooled(results: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """One candidate's runs at each development seed as one result: means over seeds, and every
    (seed, person) pair kept, so that ``behind``'s standard error also sees how far the seeds' own
    source models move the difference."""
    def mean(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else statistics.fmean(values)

    per_person = {}
    for seed, res in zip(seeds, results, strict=True):
        for sid, v in res["per_subject"].items():
            per_person[sid if len(seeds) == 1 else pair_key(seed, sid)] = v["accuracy"]
    return {"accuracy": statistics.fmean(r["target_accuracy"] for r in results),
            "source_accuracy": mean([r.get("source_accuracy") for r in results]),
            "pose_from_expression": mean([r.get("leakage", {}).get("pose_from_expression") for r in results]),
            "per_person": per_person}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="pose_shift")
    ap.add_argument("--round", type=int, choices=sorted(ROUNDS), default=max(ROUNDS),
                    help="which round of candidates (its results: choose_strategies[-roundN])")
    ap.add_argument("--dev-seeds", type=int, default=1,
                    help="development seeds (dataset seeds from %d on), each with new people and new source "
                         "models: candidates that train their own source model need several" % DEV_DATASET_SEED)
    development_arguments(ap, "choose_strategies")
    args = ap.parse_args()
    if args.dev_seeds < 1:
        ap.error(f"--dev-seeds {args.dev_seeds}: needs at least 1")
    started = time.perf_counter()
    seeds = [DEV_DATASET_SEED + i for i in range(args.dev_seeds)]
    dev = development_overrides(args, *PROTOCOLS[args.protocol])
    settings_of_round = ROUNDS[args.round]
    suffix = "" if args.round == 1 else f"-round{args.round}"
    workdir = args.workdir / (args.protocol + suffix)
    default_out = args.out == ap.get_default("out")
    if default_out:  # several seeds' results next to the one seed's; the runs are shared
        args.out = args.out.with_name(args.out.name + suffix + (f"-{len(seeds)}seeds" if len(seeds) > 1 else ""))

    def run_dir(label: str, seed: int) -> Path:
        # The first development seed's runs stay where one-seed rounds put them.
        return workdir / slug(label) if seed == DEV_DATASET_SEED else workdir / f"seed{seed}" / slug(label)

    def evaluate(label: str, ov: list[str]) -> dict[str, Any]:
        results = []
        for seed in seeds:
            warm = []
            if label in ADAPTATION_TIME:
                warm = [f"train.init_from={run_dir('current', seed) / 'source' / 'model.pt'}", "train.source_steps=0"]
            ov_seed = [*development_overrides(args, *PROTOCOLS[args.protocol], seed=seed), *ov, *warm]
            results.append(run("pada", run_dir(label, seed), ov_seed, args.threads))
        return {"label": label, "overrides": ov, **pooled(results, seeds)}

    flat = [("current", [])] + [(lab, ov) for cands in settings_of_round.values() for lab, ov in cands.items()]
    own = [c for c in flat if c[0] not in ADAPTATION_TIME]
    with ThreadPoolExecutor(args.jobs) as pool:  # the current recipe's source model first
        done = dict(zip([lab for lab, _ in own], pool.map(lambda c: evaluate(*c), own)))
        warm = [c for c in flat if c[0] in ADAPTATION_TIME]
        done.update(zip([lab for lab, _ in warm], pool.map(lambda c: evaluate(*c), warm)))
    cur = done["current"]
    settings = {}
    for setting, cands in settings_of_round.items():
        rows = [done[lab] for lab in cands]
        rule = RULES.get(setting, "better")
        won = choose(cur, rows, rule)
        settings[setting] = {"candidates": rows, "rule": rule, "chosen": won["label"] if won else "current"}
    chosen = [done[s["chosen"]] for s in settings.values() if s["chosen"] != "current"]
    report: dict[str, Any] = {"date": date.today().isoformat(), "machine": _machine(),
                              "command": "python benchmarks/choose_strategies.py " + " ".join(sys.argv[1:]),
                              "round": args.round, "protocol": args.protocol, "dataset_seed": DEV_DATASET_SEED, "dev_seeds": len(seeds), "targets": args.targets,
                              "overrides": dev, "current": cur, "settings": settings}
    if len(chosen) > 1:  # the separate choices together: kept unless they fall behind the current recipe
        # Named by what it combines: a run directory is reused only for the same combination.
        combined = evaluate("combined: " + ", ".join(c["label"] for c in chosen), [o for c in chosen for o in c["overrides"]])
        report["combined"] = {**combined, "kept": behind(cur, combined) <= 0}
        keep = chosen if report["combined"]["kept"] else []
    else:
        keep = chosen
    report["chosen"] = {"labels": [c["label"] for c in keep], "overrides": [o for c in keep for o in c["overrides"]]}
    report["seconds"] = round(time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    md = render(report)
    args.out.with_suffix(".md").write_text(md)
    if default_out:
        update_docs()
    print(md)


def render(rep: dict[str, Any]) -> str:
    cur = rep["current"]

    def line(c: dict[str, Any], mark: str) -> str:
        diffs = [c["per_person"][k] - cur["per_person"][k] for k in cur["per_person"]]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
        d = f"{100 * statistics.fmean(diffs):+.1f} ± {100 * se:.1f}" if c is not cur else "-"
        probe = c.get("pose_from_expression")
        return f"| {c['label']} | {100 * c['accuracy']:.1f} | {d} | {'-' if probe is None else f'{100 * probe:.1f}'} | {mark} |"

    out = [f"Round {rep.get('round', 1)}: strategy settings chosen on development people under the {rep['protocol']} protocol "
           f"({rep['date']}, {rep['machine']}): {_people(rep)}, each "
           f"adapted on half its captures and scored on the other half; every candidate its own source model "
           f"(those acting in adaptation only adapt from the current recipe's); "
           f"`{rep['command']}` ({rep['seconds'] // 60} min).", "",
           "| candidate | accuracy % | vs current, points ± 1 SE (paired over people) | pose from f_e, probe % | |",
           "|---|---|---|---|---|",
           line(cur, "the recipe before the choice")]
    for setting, s in rep["settings"].items():
        for c in s["candidates"]:
            out.append(line(c, f"{setting}: chosen" if s["chosen"] == c["label"] else setting))
    if "combined" in rep:
        out.append(line(rep["combined"], "kept" if rep["combined"]["kept"] else "not kept"))
    ch = rep["chosen"]["labels"]
    out += ["", "Chosen: " + (", ".join(ch) if ch else "the recipe as it stood (no candidate beat it by more "
                              "than one standard error)") + ".", ""]
    return "\n".join(out)


def _people(rep: dict[str, Any]) -> str:
    first, n = rep["dataset_seed"], rep.get("dev_seeds", 1)
    if n == 1:
        return f"dataset seed {first}, {rep['targets']} people"
    return (f"dataset seeds {first} to {first + n - 1}, {rep['targets']} people each (new people and new source "
            f"models per seed; standard errors over the {n * rep['targets']} (seed, person) pairs)")


if __name__ == "__main__":
    main()
