"""Aggregate results.json files into comparison tables (markdown, LaTeX, CSV).

Runs are grouped (by default by recipe, method, selection rule and every swept key) and each
group is summarized over seeds and target subjects: per seed, the mean over its subjects; the
table gives the mean and sample standard deviation of those per-seed means, and the spread
(standard deviation) over subjects of their per-subject means. A group's runs may each hold all
subjects of a seed (plain runs) or one subject each (sweep jobs): both give the same numbers.
Every (seed, subject) result is kept under ``pairs``, so that two groups can be compared pair by
pair (:func:`add_paired`, statistics in :mod:`facedapt.stats`). Every table names the model
selection rule of its rows.

Used by ``facedapt compare`` and by ``benchmarks/compare.py``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from facedapt.errors import UsageError
from facedapt.stats import excludes_zero, paired, sample_std
from facedapt.tables import markdown

METRICS = ("accuracy", "uar", "macro_f1")
#: Keys a sweep records per job that are averaged over, never grouped by.
AVERAGED = ("seed", "subject")


@attrs.define
class RunResult:
    path: Path
    results: dict[str, Any]
    swept: dict[str, Any] = attrs.field(factory=dict)  # from a sweep job's job.json

    def field(self, key: str) -> Any:
        if key in self.swept:
            return self.swept[key]
        return self.results.get(key)


def find_runs(paths: Iterable[str | Path]) -> list[RunResult]:
    """Every run-level results.json under ``paths`` (files or directories, searched
    recursively); per-subject results (subjects/<id>/results.json) are not runs."""
    found: list[RunResult] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UsageError(f"{p}: no such file or directory")
        files = [p] if p.is_file() else sorted(p.rglob("results.json"))
        for f in files:
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UsageError(f"{f}: not a readable results.json ({exc})") from None
            if not isinstance(data, dict) or "per_subject" not in data:
                continue
            found.append(RunResult(f, data, _swept(f)))
    return found


def _swept(results_file: Path) -> dict[str, Any]:
    for d in (results_file.parent, results_file.parent.parent):  # <job>/run/results.json
        job = d / "job.json"
        if job.is_file():
            try:
                return dict(json.loads(job.read_text(encoding="utf-8")).get("swept", {}))
            except (OSError, ValueError):
                return {}
    return {}


def default_keys(runs: Sequence[RunResult]) -> list[str]:
    swept = sorted({k for r in runs for k in r.swept if k not in AVERAGED})
    return ["recipe", "method", *[k for k in swept if k not in ("recipe", "method")], "selection"]


def group_runs(runs: Sequence[RunResult], keys: Sequence[str]) -> dict[tuple, list[RunResult]]:
    groups: dict[tuple, list[RunResult]] = {}
    for r in runs:
        groups.setdefault(tuple(_cell(r.field(k)) for k in keys), []).append(r)
    return groups


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def _mean(xs: Iterable[float]) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.fmean(xs) if xs else float("nan")


def _key_means(results: Sequence[dict[str, Any]], field: str) -> dict[str, float]:
    """The mean over results of each key of their ``field`` dicts (a result may lack some)."""
    keys = sorted({k for r in results for k in (r.get(field) or {})})
    return {k: _mean(r[field][k] for r in results if k in (r.get(field) or {})) for k in keys}


def pair_key(seed: Any, subject: str) -> str:
    """How a (seed, subject) result is named in ``pairs``."""
    return f"{seed}/{subject}"


def summarize_group(results: Sequence[dict[str, Any]], baseline: dict[str, float] | None = None) -> dict[str, Any]:
    """One row from a group's results.json contents: mean and std over seeds of the per-seed
    mean over subjects, per subject and per yaw means, leakage, adaptation time; with
    ``baseline`` (subject -> accuracy), each subject's change against it."""
    by_seed: dict[Any, dict[str, dict[str, float]]] = {}
    for res in results:
        by_seed.setdefault(res.get("seed"), {}).update(res["per_subject"])
    seed_means = {m: [_mean(v.get(m) for v in subj.values()) for subj in by_seed.values()] for m in METRICS}
    subjects = sorted({sid for subj in by_seed.values() for sid in subj}, key=_natural)
    per_subject = {sid: _mean(subj[sid]["accuracy"] for subj in by_seed.values() if sid in subj) for sid in subjects}
    yaws = sorted({y for r in results for y in r.get("per_yaw", {})}, key=lambda y: int(y))
    adapt = [s for r in results for s in (r.get("timing", {}).get("per_subject_adapt") or {}).values()]
    pairs = {pair_key(seed, sid): v for seed, subj in by_seed.items() for sid, v in subj.items()}
    row: dict[str, Any] = {
        "runs": len(results), "seeds": len(by_seed), "subjects": len(subjects),
        "pairs": {k: {m: v[m] for m in ("accuracy", "source_accuracy", "gain") if m in v} for k, v in pairs.items()},
        "selection": sorted({str(r.get("selection")) for r in results}),
        "subject_std": sample_std(list(per_subject.values())),
        "per_subject": per_subject,
        "per_yaw": {y: _mean(r["per_yaw"][y] for r in results if y in r.get("per_yaw", {})) for y in yaws},
        "leakage": _key_means(results, "leakage"),
        "leakage_chance": _key_means(results, "leakage_chance"),
        "adapt_seconds_per_subject": _mean(adapt),
    }
    for m in METRICS:
        row[f"{m}_mean"], row[f"{m}_std"] = _mean(seed_means[m]), sample_std(seed_means[m])
    gains = [v["gain"] for v in pairs.values() if "gain" in v]
    if gains:  # before/after on the row's own source model
        row["source_accuracy_mean"] = _mean(v["source_accuracy"] for v in pairs.values() if "source_accuracy" in v)
        row["gain"] = {"mean": _mean(gains), "worst": min(gains), "improved": sum(g > 0 for g in gains),
                       "n": len(gains)}
    if baseline is not None:
        row["per_subject_delta"] = {sid: acc - baseline[sid] for sid, acc in per_subject.items() if sid in baseline}
    return row


def accuracies(row: dict[str, Any]) -> dict[str, float]:
    """A row's accuracy per (seed, subject) pair."""
    return {k: v["accuracy"] for k, v in row["pairs"].items()}


def add_paired(rows: dict[str, dict[str, Any]], baselines: Sequence[str]) -> None:
    """``rows[name]["paired"][baseline]``: each row against each baseline row, pair by pair
    (mean difference, 95% interval, pairs, pairs improved); a row is not compared with itself."""
    for name, row in rows.items():
        row["paired"] = {b: paired(accuracies(row), accuracies(rows[b])) for b in baselines
                         if b in rows and b != name}


def paired_cell(p: dict[str, Any] | None) -> str:
    """``+3.1 [+0.4, +5.8]*`` in points; the star marks an interval that excludes 0."""
    if not p or p["n"] == 0:
        return "-"
    lo, hi = p["ci95"]
    star = "*" if excludes_zero(p) else ""
    return f"{100 * p['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{star} ({p['improved']}/{p['n']})"


def per_seed_cell(p: dict[str, Any] | None) -> str:
    """``seeds +2.1 / -0.5 / +3.5``: the mean difference per seed, in points ("" without seeds)."""
    if not p or len(p.get("per_seed") or {}) < 2:
        return ""
    return "seeds " + " / ".join(f"{100 * d:+.1f}" for _, d in sorted(p["per_seed"].items(), key=lambda kv: _natural(kv[0])))


def _natural(s: str) -> tuple:
    return (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s)


def compare(paths: Iterable[str | Path], keys: Sequence[str] | None = None,
            against: Sequence[str] = ()) -> tuple[list[str], list[dict[str, Any]]]:
    """Find, group and summarize; returns the grouping keys and one row per group (each row
    with its key values under "key"). ``against`` names baseline groups (by any of their key
    values, e.g. a recipe or method name): every row gets paired differences against each."""
    runs = find_runs(paths)
    if not runs:
        raise UsageError("no results.json of a finished run found under " + ", ".join(map(str, paths)))
    keys = list(keys) if keys else default_keys(runs)
    rows = []
    for values, members in group_runs(runs, keys).items():
        rows.append({"key": dict(zip(keys, values)), **summarize_group([m.results for m in members])})
    if against:
        named = {_row_name(r, keys): r for r in rows}
        for name in against:
            matches = [n for n, r in named.items() if name in r["key"].values()]
            if len(matches) != 1:
                found = "no group" if not matches else f"{len(matches)} groups ({'; '.join(matches)})"
                raise UsageError(f"--against {name}: {found} has that value; groups: {'; '.join(named)}")
            named[name] = named.pop(matches[0])
        add_paired(named, list(against))
    return keys, rows


def _row_name(row: dict[str, Any], keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={row['key'][k]}" for k in keys)


def selection_note(rows: Sequence[dict[str, Any]]) -> str:
    rules = sorted({s for r in rows for s in r["selection"]})
    text = f"model selection rule: {', '.join(f'`{s}`' for s in rules)}"
    if "oracle" in rules:
        text += " (oracle chooses on target labels: an upper bound, not a result)"
    if len(rules) > 1:
        text += "; rows differ in selection rule"
    return text


def _pct(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def table_rows(keys: Sequence[str], rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the comparison table (percent, one decimal)."""
    shown = [k for k in keys if k != "selection"]
    against = list(dict.fromkeys(b for r in rows for b in r.get("paired", {})))
    header = [*shown, "selection", "seeds", "subjects", "accuracy % (mean ± std over seeds)", "UAR %", "macro-F1 %",
              "spread over subjects", *(f"vs {b}: points [95% CI] (improved/pairs)" for b in against)]
    cells = []
    for r in rows:
        cells.append([*(r["key"][k] for k in shown), ",".join(r["selection"]), str(r["seeds"]), str(r["subjects"]),
                      f"{_pct(r['accuracy_mean'])} ± {_pct(r['accuracy_std'])}",
                      f"{_pct(r['uar_mean'])} ± {_pct(r['uar_std'])}",
                      f"{_pct(r['macro_f1_mean'])} ± {_pct(r['macro_f1_std'])}", _pct(r["subject_std"]),
                      *(paired_cell(r.get("paired", {}).get(b)) for b in against)])
    return header, cells


def render(keys: Sequence[str], rows: Sequence[dict[str, Any]], fmt: str = "md", caption: str = "") -> str:
    """The table in ``md``, ``latex`` or ``csv``; the caption (markdown/LaTeX) or a comment
    line (CSV) names the selection rule."""
    note = selection_note(rows)
    if any(r.get("paired") for r in rows):
        note += ("; vs columns: paired differences over (seed, subject) pairs with a 95% paired-t interval, "
                 "* where it excludes 0")
    caption = f"{caption}; {note}" if caption else note[0].upper() + note[1:]
    header, cells = table_rows(keys, rows)
    if fmt == "md":
        return markdown(header, cells, caption)
    if fmt == "latex":
        return latex(header, cells, caption)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        buf.write(f"# {caption.replace('`', '')}\n")
        w.writerow(header)
        w.writerows([[c.replace(" ± ", "±") for c in row] for row in cells])
        return buf.getvalue()
    raise UsageError(f"--format {fmt!r}: expected md, latex or csv")


def latex(header: Sequence[str], cells: Sequence[Sequence[str]], caption: str = "") -> str:
    def esc(s: str) -> str:
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                     ("{", r"\{"), ("}", r"\}")):
            s = s.replace(a, b)
        return s.replace("±", r"$\pm$").replace("`", "")

    out = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule",
           " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
    out += [" & ".join(esc(c) for c in row) + r" \\" for row in cells]
    out += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        out.append(r"\caption{" + esc(caption) + "}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def breakdowns(rows: dict[str, dict[str, Any]], subjects: Sequence[str], yaws: Sequence[str]) -> str:
    """Markdown tables of accuracy per target subject (with the change against the baseline
    where rows carry ``per_subject_delta``) and per yaw; rows keyed by their label."""
    per_subject = [[label, *(f"{_pct(r['per_subject'].get(s, float('nan')))} "
                             f"({100 * r.get('per_subject_delta', {}).get(s, 0):+.1f})" for s in subjects)]
                   for label, r in rows.items()]
    per_yaw = [[label, *(_pct(r["per_yaw"].get(y, float("nan"))) for y in yaws)] for label, r in rows.items()]
    return (markdown(["method", *subjects], per_subject,
                     "Per target subject: accuracy % (change against source-only, points)") + "\n"
            + markdown(["method", *yaws], per_yaw, "Per yaw (degrees): accuracy %"))
