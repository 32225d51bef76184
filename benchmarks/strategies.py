"""Which strategy helps where: each strategy's effect on both comparison protocols, side by side.

    python benchmarks/strategies.py

Reads benchmarks/results/compare.json (default protocol) and compare-pose_shift.json (written by
`python benchmarks/compare.py [--protocol pose_shift]`), and writes
benchmarks/results/strategies.{json,md} and the table in docs/benchmarks.md. An effect is the
full method minus the row without the strategy, a 95% paired-t interval over (seed, person) pairs. The verdict per protocol:
"helps" where the interval is above 0, "costs" where it is below 0, "not shown" otherwise; the
rule for the recipes' defaults is that a strategy shown to cost accuracy on both protocols is
not on by default.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import ROOT, update_docs
from compare import ABLATIONS, LABELS

from facedapt.compare import paired_cell
from facedapt.stats import excludes_zero
from facedapt.tables import markdown

RESULTS = ROOT / "benchmarks" / "results"
PROTOCOLS = {"default": "compare.json", "pose shift": "compare-pose_shift.json"}
#: What each ablation row takes away, named as the strategy.
STRATEGY = {
    "pada_no_cross": "cross-adversarial terms",
    "pada_no_reconstruction": "reconstruction (with cross-pose pairs)",
    "pada_no_pose": "pose branch (pose features, D_p, cross terms)",
    "pada_shared_norm": "per-domain normalization with AdaBN",
    "pada_no_pose_warp": "pose_warp augmentation",
}


def verdict(p: dict[str, Any] | None) -> str:
    if not p:
        return "not measured"
    if excludes_zero(p):
        return "helps" if p["mean"] > 0 else "costs"
    return "not shown"


def effects(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return report.get("ablation_effects", {})


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the comparison results (and the output)")
    args = ap.parse_args(argv)
    results = args.results
    reports = {name: json.loads((results / f).read_text()) for name, f in PROTOCOLS.items() if (results / f).is_file()}
    if not reports:
        raise SystemExit("no comparison results yet: run `python benchmarks/compare.py` first")
    rows = [r for r in ABLATIONS if any(r in effects(rep) for rep in reports.values())]
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        per = {name: effects(rep).get(row) for name, rep in reports.items()}
        verdicts = {name: verdict(p) for name, p in per.items()}
        costs_everywhere = len(verdicts) == len(PROTOCOLS) and all(v == "costs" for v in verdicts.values())
        table[row] = {"strategy": STRATEGY.get(row, LABELS.get(row, row).strip()), "effects": per, "verdicts": verdicts,
                      "off_by_default": costs_everywhere}
    head = ["strategy", *(f"{name}: effect, points [95% CI] (better/pairs)" for name in reports),
            *(f"verdict, {name}" for name in reports)]
    body = [[t["strategy"], *(paired_cell(t["effects"][n]) if t["effects"][n] else "-" for n in reports),
             *(t["verdicts"][n] for n in reports)] for t in table.values()]
    dates = ", ".join(f"{name}: {rep.get('date', '?')}, {len(rep.get('seeds', []))} seeds x {rep.get('targets', '?')} people"
                      for name, rep in reports.items())
    md = (f"Each strategy's effect on pose-aware ADA's accuracy, from the comparison tables ({dates}). Rule for "
          "the defaults: a strategy shown to cost accuracy on both protocols (interval below 0) is not on by default; "
          + ("none is." if not any(t["off_by_default"] for t in table.values()) else
             "off by default: " + ", ".join(t["strategy"] for t in table.values() if t["off_by_default"]) + ".")
          + "\n\n" + markdown(head, body))
    (results / "strategies.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    (results / "strategies.md").write_text(md + "\n", encoding="utf-8")
    if results == RESULTS:
        update_docs()
    print(md)
    return table


if __name__ == "__main__":
    main()
