"""A run's report: report.md and report.html in the run directory, plots in <run_dir>/report/.

Everything comes from files the run wrote (recipe.yaml, environment.json, results.json,
metrics.jsonl, subjects/<id>/results.json and features.pt), so ``facedapt report RUN_DIR``
rebuilds it at any time without data or models. Plots use matplotlib's Agg canvas directly
(no pyplot): no display needed and no global backend state changed.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from facedapt.engine.rundir import safe_name
from facedapt.tables import markdown
from facedapt.errors import UsageError

#: Targets shown in the feature projection (one row each); the rest are listed as left out.
MAX_PROJECTION_ROWS = 6
#: Up to this many targets the per-yaw plot draws a thin line for each besides their mean.
MAX_CURVE_LINES = 10


def build_report(run_dir: str | Path) -> Path:
    """Write report.md, report.html and report/*.png for a finished run; returns report.html.

    Raises UsageError when ``run_dir`` holds no finished run (no recipe.yaml or results.json).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise UsageError(f"{run_dir}: not a run directory (no recipe.yaml)")
    if not (run_dir / "results.json").is_file():
        raise UsageError(f"{run_dir}: no results.json (the run has not finished)")
    data = _read_run(run_dir)
    plot_dir = run_dir / "report"
    plot_dir.mkdir(exist_ok=True)
    plots = _plots(data, plot_dir)
    sections = _sections(data)
    (run_dir / "report.md").write_text(_markdown(data, sections, plots), encoding="utf-8")
    out = run_dir / "report.html"
    out.write_text(_html(data, sections, plots), encoding="utf-8")
    return out


# -- reading ------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    """Logged steps of one phase; after a resume a step can appear twice: keep the last."""
    by_step: dict[int, dict[str, Any]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:  # a line cut short by a crash
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            by_step[rec["step"]] = rec
    return [by_step[k] for k in sorted(by_step)]


def _read_run(run_dir: Path) -> dict[str, Any]:
    results = _read_json(run_dir / "results.json") or {}
    subjects: dict[str, dict[str, Any]] = {}
    sub_root = run_dir / "subjects"
    folders = sorted(p for p in sub_root.iterdir() if p.is_dir()) if sub_root.is_dir() else []
    for folder in folders:
        entry: dict[str, Any] = {"dir": folder.name, "results": _read_json(folder / "results.json") or {},
                                 "metrics": _read_metrics(folder / "metrics.jsonl"),
                                 "source_metrics": _read_metrics(folder / "source" / "metrics.jsonl")}
        feats = folder / "features.pt"
        if feats.is_file():
            try:
                entry["features"] = torch.load(feats, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a damaged file only costs its plot
                from loguru import logger

                logger.warning("report: {} not read ({})", feats, type(exc).__name__)
        subjects[folder.name] = entry
    # results.json keys subjects by id; folders use a filesystem-safe form of it.
    by_id = {sid: subjects.get(safe_name(sid), {}) for sid in results.get("per_subject", {})}
    return {"run_dir": run_dir, "results": results, "recipe_text": (run_dir / "recipe.yaml").read_text(encoding="utf-8"),
            "env": _read_json(run_dir / "environment.json") or {},
            "source_metrics": _read_metrics(run_dir / "source" / "metrics.jsonl"), "subjects": by_id}


# -- numbers ------------------------------------------------------------------------------------


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def _deg(yaw: Any) -> str:
    y = int(yaw)
    return f"{y:+d}°" if y else "0°"


Table = tuple[list[str], list[list[str]]]


def _sections(data: dict[str, Any]) -> list[tuple[str, Table | str]]:
    """(title, table or note) pairs shared by the Markdown and HTML writers."""
    res, env = data["results"], data["env"]
    metrics = [k[len("target_"):] for k in res if k.startswith("target_") and not k.endswith("_std")]
    classes = res.get("classes", [])
    out: list[tuple[str, Table | str]] = []

    rows = [[f"target {m}", f"{_fmt(res.get(f'target_{m}'))} ± {_fmt(res.get(f'target_{m}_std'))}"] for m in metrics]
    if "source_accuracy" in res:
        improved = f"{res.get('subjects_improved', '-')} of {len(res.get('per_subject', {}))}"
        rows += [["before adaptation (source model, same images)", _fmt(res["source_accuracy"])],
                 ["gain (points)", f"{100 * res['gain']:+.1f}; {improved} targets improved, worst "
                                   f"{100 * res.get('worst_gain', float('nan')):+.1f}"]]
    rows += [["source-val accuracy", _fmt(res.get("source_val_accuracy"))],
             ["targets", str(len(res.get("per_subject", {})))],
             ["selection", str(res.get("selection", "-"))]]
    if res.get("selection_note"):
        rows.append(["selection note", res["selection_note"]])
    rows += [["method", str(res.get("method", "-"))], ["seed", str(res.get("seed", "-"))],
             ["precision", str(res.get("precision", "-"))], ["device", str(env.get("device", "-"))],
             ["started", str(env.get("started", "-"))]]
    out.append(("Results", (["", "value"], rows)))

    per_subject = res.get("per_subject", {})
    if per_subject:
        adapt_s = res.get("timing", {}).get("per_subject_adapt", {})
        before = any("source_accuracy" in v for v in per_subject.values())
        head = ["subject", *metrics, *(["before", "gain (points)"] if before else []), "n", "selected step", "adapt s"]
        rows = []
        for sid, v in per_subject.items():
            sub = data["subjects"].get(sid, {}).get("results", {})
            change = [_fmt(v.get("source_accuracy")), f"{100 * v['gain']:+.1f}" if "gain" in v else "-"] if before else []
            rows.append([sid, *(_fmt(v.get(m)) for m in metrics), *change, str(v.get("n", "-")),
                         _fmt(sub.get("selected_step")), _fmt(adapt_s.get(sid), 1)])
        out.append(("Per subject", (head, rows)))

    per_yaw = res.get("per_yaw", {})
    if per_yaw:
        out.append(("Per yaw (mean over subjects)",
                    (["yaw", "accuracy"], [[_deg(y), _fmt(a)] for y, a in per_yaw.items()])))

    leak = res.get("leakage", {})
    if leak:
        chance = {"pose_from_expression": 1 / len(per_yaw) if per_yaw else None,
                  "expression_from_pose": 1 / len(classes) if classes else None}
        rows = [[k, _fmt(v), _fmt(chance.get(k))] for k, v in leak.items()]
        out.append(("Leakage (linear probes; closer to chance is better disentangled)",
                    (["probe", "accuracy", "chance"], rows)))

    timing = {k: v for k, v in res.get("timing", {}).items() if not isinstance(v, dict)}
    if timing:
        out.append(("Timing", (["phase", "seconds"], [[k, _fmt(v, 1)] for k, v in timing.items()])))

    versions = env.get("versions", {})
    if versions:
        out.append(("Environment", (["component", "version"], [[k, str(v)] for k, v in versions.items()])))
    origins = env.get("plugins", {})
    if origins:
        rows = [[name, str(o.get("distribution", "-")), str(o.get("version", "-"))] for name, o in origins.items()]
        out.append(("Plugins", (["plugin", "distribution", "version"], rows)))
    return out


# -- writers ------------------------------------------------------------------------------------


def _title(data: dict[str, Any]) -> str:
    res = data["results"]
    return f"Run report: {res.get('recipe', data['run_dir'].name)} ({res.get('method', '?')})"


_PLOTS = "\0plots"  # a placeholder section: where the plots go


def _with_plots(sections: list[tuple[str, Table | str]],
                plots: list[tuple[str, str]]) -> list[tuple[str, Table | str]]:
    """The sections with the plots after the results, before environment and plugins."""
    if not plots:
        return sections
    at = next((i for i, (t, _) in enumerate(sections) if t in ("Environment", "Plugins")), len(sections))
    return [*sections[:at], (_PLOTS, ""), *sections[at:]]


def _markdown(data: dict[str, Any], sections: list[tuple[str, Table | str]], plots: list[tuple[str, str]]) -> str:
    lines = [f"# {_title(data)}", "", f"Run directory: `{data['run_dir']}`", ""]
    for title, body in _with_plots(sections, plots):
        if title == _PLOTS:
            lines += ["## Plots", ""]
            for caption, name in plots:
                lines += [f"### {caption}", "", f"![{caption}](report/{name})", ""]
            continue
        lines += [f"## {title}", ""]
        if isinstance(body, str):
            lines += [body, ""]
            continue
        lines.append(markdown(*body))
    fence = "````" if "```" in data["recipe_text"] else "```"
    lines += ["## Recipe", "", "<details><summary>recipe.yaml (resolved)</summary>", "", f"{fence}yaml",
              data["recipe_text"].rstrip("\n"), fence, "", "</details>", ""]
    return "\n".join(lines)


_CSS = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 10px;text-align:left}
th{background:#f2f2f2}td{font-variant-numeric:tabular-nums}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
pre{background:#f7f7f7;padding:1em;overflow-x:auto}code{background:#f2f2f2;padding:0 3px}"""


def _html_table(head: list[str], rows: Iterable[list[str]]) -> str:
    e = html.escape
    out = ["<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join([*out, "</table>"])


def _html(data: dict[str, Any], sections: list[tuple[str, Table | str]], plots: list[tuple[str, str]]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(_title(data))}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(_title(data))}</h1>",
             f"<p>Run directory: <code>{e(str(data['run_dir']))}</code></p>"]
    for title, body in _with_plots(sections, plots):
        if title == _PLOTS:
            parts.append("<h2>Plots</h2>")
            for caption, name in plots:
                parts.append(f'<h3>{e(caption)}</h3>\n<img src="report/{e(name)}" alt="{e(caption)}">')
            continue
        parts.append(f"<h2>{e(title)}</h2>")
        parts.append(f"<p>{e(body)}</p>" if isinstance(body, str) else _html_table(*body))
    parts += ["<h2>Recipe</h2>", "<details><summary>recipe.yaml (resolved)</summary>",
              f"<pre>{e(data['recipe_text'])}</pre>", "</details>", "</body></html>", ""]
    return "\n".join(parts)


# -- plots --------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, format="png", dpi=100)


def _plots(data: dict[str, Any], plot_dir: Path) -> list[tuple[str, str]]:
    """Draw every plot the run has data for; (caption, file name) of each, in report order.
    A plot that fails is left out of the report with a warning rather than losing the rest."""
    from loguru import logger

    for old in plot_dir.glob("*.png"):  # a plot the data no longer supports must not linger
        old.unlink()
    makers = [("Training curves", "training_curves.png", _plot_training_curves),
              ("Confusion matrix (all targets)", "confusion.png", _plot_confusion),
              ("Accuracy per subject, before and after adaptation", "per_subject.png", _plot_per_subject),
              ("Accuracy per yaw", "per_yaw.png", _plot_per_yaw),
              ("Expression features, 2-D PCA per target", "features.png", _plot_features)]
    done = []
    for caption, name, make in makers:
        try:
            fig = make(data)
            if fig is not None:
                _save(fig, plot_dir / name)
                done.append((caption, name))
        except Exception as exc:  # noqa: BLE001 - one bad plot must not cost the report
            logger.warning("report: plot {} skipped ({}: {})", name, type(exc).__name__, exc)
    return done


def _loss_keys(records: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k not in ("step", "phase", "target", "skipped") and isinstance(v, (int, float)) \
                    and not isinstance(v, bool):
                keys[k] = None
    return list(keys)


def _plot_training_curves(data: dict[str, Any]) -> Any:
    """Two panels, one line per loss term: source training and adaptation. Several runs of a
    phase (adaptation per target; per-target source models) show as their mean and range."""
    source = {"source": data["source_metrics"]} if data["source_metrics"] else {
        sid: s["source_metrics"] for sid, s in data["subjects"].items() if s.get("source_metrics")}
    adapt = {sid: s["metrics"] for sid, s in data["subjects"].items() if s.get("metrics")}
    panels = [(f"source training{_runs_note(source)}", source), (f"adaptation{_runs_note(adapt)}", adapt)]
    panels = [(t, runs) for t, runs in panels if _loss_keys([r for recs in runs.values() for r in recs])]
    if not panels:
        return None
    from matplotlib.ticker import MaxNLocator

    keys = _loss_keys([r for _, runs in panels for recs in runs.values() for r in recs])
    colour = {k: f"C{i % 10}" for i, k in enumerate(keys)}
    fig = _figure(5.0 * len(panels) + 1.6, 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, runs) in zip(axes, panels):
        positive = True
        for key in keys:
            by_step: dict[int, list[float]] = {}
            for recs in runs.values():
                for r in recs:
                    v = r.get(key)
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        by_step.setdefault(r["step"], []).append(float(v))
            if not by_step:
                continue
            steps = sorted(by_step)
            lo, hi = [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]
            positive = positive and min(lo) > 0
            mean = [sum(by_step[s]) / len(by_step[s]) for s in steps]
            width = 2.2 if key == "loss" else 1.3  # the total the optimizer saw stands out
            ax.plot(steps, mean, color=colour[key], linewidth=width, label=key, marker="o" if len(steps) < 4 else None,
                    markersize=3)
            if len(runs) > 1:
                ax.fill_between(steps, lo, hi, color=colour[key], alpha=0.15, linewidth=0)
        if positive:  # terms differ by orders of magnitude
            from matplotlib.ticker import NullFormatter

            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks crowd (and slow) the axis
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8, title="loss term",
               title_fontsize=8)
    return fig


def _runs_note(runs: dict[str, list]) -> str:
    return f" (mean and range over {len(runs)} targets)" if len(runs) > 1 else ""


def _plot_confusion(data: dict[str, Any]) -> Any:
    res = data["results"]
    conf = res.get("confusion")
    if not conf:
        return None
    m = torch.tensor(conf, dtype=torch.float64)
    k = m.shape[0]
    classes = list(res.get("classes") or [str(i) for i in range(k)])[:k]
    totals = m.sum(1, keepdim=True)
    norm = torch.where(totals > 0, m / totals.clamp(min=1), torch.zeros_like(m))
    side = 1.5 + 0.75 * k
    fig = _figure(side + 1.2, side)
    ax = fig.subplots()
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    for r in range(k):
        for c in range(k):
            v = float(norm[r, c])
            ax.text(c, r, f"{v:.2f}\n({int(m[r, c])})", ha="center", va="center", fontsize=7 if k > 8 else 8 if k > 5 else 9,
                    color="white" if v > 0.55 else "black")
    ax.set_xticks(range(k), classes, rotation=40, ha="right", fontsize=9)
    ax.set_yticks(range(k), [f"{c} ({int(totals[i])})" for i, c in enumerate(classes)], fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (images)")
    ax.set_title(f"row-normalized, counts in brackets; n={int(m.sum())}", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def _plot_per_subject(data: dict[str, Any]) -> Any:
    res = data["results"]
    per_subject = res.get("per_subject", {})
    if not per_subject:
        return None
    ids = list(per_subject)
    acc = [float(per_subject[s].get("accuracy", float("nan"))) for s in ids]
    before = [per_subject[s].get("source_accuracy") for s in ids]
    paired = all(b is not None for b in before)
    fig = _figure(max(5.0, (0.7 if paired else 0.45) * len(ids) + 2.5), 3.6)
    ax = fig.subplots()
    if paired:  # before (the source model) and after, side by side; the gain above each pair
        x = [i - 0.19 for i in range(len(ids))]
        ax.bar(x, before, color="0.7", width=0.38, label="before adaptation (source model)")
        bars = ax.bar([i + 0.19 for i in range(len(ids))], acc, color="C0", width=0.38, label="after adaptation")
        if len(ids) <= 20:
            gains = [f"{100 * (a - b):+.0f}" for a, b in zip(acc, before)]
            ax.bar_label(bars, labels=gains, fontsize=8, padding=2)
    else:
        bars = ax.bar(range(len(ids)), acc, color="C0", width=0.6)
        if len(ids) <= 20:
            ax.bar_label(bars, labels=[_fmt(a, 2) for a in acc], fontsize=8, padding=2)
    mean = res.get("target_accuracy")
    if isinstance(mean, float) and not math.isnan(mean):
        ax.axhline(mean, color="C1", linestyle="-", linewidth=1.2, label=f"mean target {mean:.3f}")
    sv = res.get("source_val_accuracy")
    if isinstance(sv, float) and not math.isnan(sv):
        ax.axhline(sv, color="C2", linestyle="--", linewidth=1.2, label=f"source-val {sv:.3f}")
    classes = res.get("classes") or []
    if classes:
        ax.axhline(1 / len(classes), color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xticks(range(len(ids)), ids, rotation=45 if len(ids) > 8 else 0, ha="right" if len(ids) > 8 else "center",
                  fontsize=8)
    pad = max(0, 4 - len(ids)) / 2  # a few subjects: centred bars of the usual width, not a wall
    ax.set_xlim(-0.6 - pad, len(ids) - 0.4 + pad)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("accuracy")
    ax.set_xlabel("target subject")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _plot_per_yaw(data: dict[str, Any]) -> Any:
    res = data["results"]
    per_yaw = res.get("per_yaw", {})
    if not per_yaw:
        return None
    fig = _figure(6.0, 3.6)
    ax = fig.subplots()
    subjects = data["subjects"]
    if len(subjects) <= MAX_CURVE_LINES:  # each target thin, their mean bold
        for j, (sid, s) in enumerate(subjects.items()):
            py = s.get("results", {}).get("per_yaw", {})
            if py:
                ys = sorted(py, key=int)
                ax.plot([int(y) for y in ys], [py[y] for y in ys], color=f"C{(j + 1) % 10}", linewidth=0.9,
                        alpha=0.6, marker=".", label=sid)
    ys = sorted(per_yaw, key=int)
    ax.plot([int(y) for y in ys], [per_yaw[y] for y in ys], color="black", linewidth=2.2, marker="o",
            label="mean over targets")
    before = res.get("source_per_yaw", {})
    if before:
        yb = sorted(before, key=int)
        ax.plot([int(y) for y in yb], [before[y] for y in yb], color="black", linewidth=1.4, linestyle="--",
                marker="o", markerfacecolor="white", label="before adaptation")
    classes = res.get("classes") or []
    if classes:
        ax.axhline(1 / len(classes), color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xticks([int(y) for y in ys], [_deg(y) for y in ys], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("yaw (degrees)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _plot_features(data: dict[str, Any]) -> Any:
    from matplotlib import colormaps, colors

    from facedapt.data.samples import EXPRESSIONS

    found = [(sid, s["features"]) for sid, s in data["subjects"].items() if "features" in s]
    if not found:
        return None
    shown = found[:MAX_PROJECTION_ROWS]
    fig = _figure(10.5, 3.6 * len(shown) + (0.4 if len(found) > len(shown) else 0))
    axes = fig.subplots(len(shown), 2, squeeze=False)
    classes = list(data["results"].get("classes") or EXPRESSIONS)
    tab = colormaps["tab10"]
    for row, (sid, f) in enumerate(shown):
        xy = f["expression_2d"].float()
        size = 30 if len(xy) < 200 else 14 if len(xy) < 1000 else 7  # few points: make them visible
        expr, yaw = f["expression"].long(), f["yaw"].float()
        ax = axes[row][0]
        unknown = expr < 0
        if unknown.any():
            ax.scatter(xy[unknown, 0], xy[unknown, 1], s=size, c="lightgrey", label="unlabelled")
        for c in sorted(set(expr[~unknown].tolist())):
            m = expr == c
            name = classes[c] if c < len(classes) else str(c)
            ax.scatter(xy[m, 0], xy[m, 1], s=size, color=tab(c % 10), label=name, alpha=0.8, linewidths=0)
        ax.set_title(f"{sid}: coloured by expression (n={len(xy)})", fontsize=10)
        ax.legend(fontsize=7, markerscale=1.6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax = axes[row][1]
        known = ~torch.isnan(yaw)
        if (~known).any():
            ax.scatter(xy[~known, 0], xy[~known, 1], s=size, c="lightgrey")
        if known.any():
            lim = max(15.0, float(yaw[known].abs().max()))
            # viridis: no near-white middle, so frontal faces stay visible on the white axes
            sc = ax.scatter(xy[known, 0], xy[known, 1], s=size, c=yaw[known], cmap="viridis",
                            norm=colors.Normalize(-lim, lim), alpha=0.85, linewidths=0)
            fig.colorbar(sc, ax=ax, label="yaw (°)")
        ax.set_title(f"{sid}: coloured by yaw", fontsize=10)
        for a in axes[row]:
            a.set_xticks([])
            a.set_yticks([])
            a.set_xlabel("PC 1", fontsize=8)
            a.set_ylabel("PC 2", fontsize=8)
    if len(found) > len(shown):
        fig.suptitle(f"first {len(shown)} of {len(found)} targets", fontsize=10)
    return fig
