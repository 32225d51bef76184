"""What ``facedapt data inspect`` reports about a loaded dataset.

The CLI loads the source with ``on_bad_image="skip"`` so every problem is listed rather than
the first one raised, then prints :func:`format_summary` or the :func:`summarize` dict as JSON.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from facedapt.data.samples import EXPRESSIONS, Samples


def summarize(samples: Samples) -> dict[str, Any]:
    """Counts by expression, subject and yaw, plus the problems found while reading.

    Keys: ``num_images``, ``expressions`` (canonical name -> count, in vocabulary order, plus
    ``unlabelled``), ``subjects`` (id -> count), ``poses`` (integer yaw degrees as strings ->
    count, ascending; empty without pose labels), ``problems`` (list of {path, problem}).
    """
    expr = Counter(int(e) for e in samples.expression.tolist())
    expressions = {name: expr[i] for i, name in enumerate(EXPRESSIONS) if expr[i]}
    unlabelled = sum(n for i, n in expr.items() if not 0 <= i < len(EXPRESSIONS))
    if unlabelled:
        expressions["unlabelled"] = unlabelled
    subj = Counter(int(s) for s in samples.subject.tolist())
    subjects = {sid: subj[i] for i, sid in enumerate(samples.subject_ids) if subj[i]}
    yaws = Counter(int(round(y)) for y in samples.yaw.tolist() if not math.isnan(y))
    poses = {str(y): yaws[y] for y in sorted(yaws)}
    return {
        "num_images": len(samples),
        "expressions": expressions,
        "subjects": subjects,
        "poses": poses,
        "problems": [dict(p) for p in samples.problems],
    }


def format_summary(summary: dict[str, Any], *, max_subjects: int = 20, max_problems: int = 20) -> str:
    """A short terminal report of :func:`summarize`'s dict."""
    lines = [f"images: {summary['num_images']}"]
    lines.append("expressions: " + (_counts(summary["expressions"]) or "none"))
    subjects = summary["subjects"]
    shown = dict(list(subjects.items())[:max_subjects])
    more = f" ... (+{len(subjects) - len(shown)} more)" if len(subjects) > len(shown) else ""
    lines.append(f"subjects ({len(subjects)}): " + (_counts(shown) or "none") + more)
    lines.append("yaw: " + (_counts(summary["poses"]) if summary["poses"] else "no pose labels"))
    problems = summary["problems"]
    lines.append(f"problems: {len(problems)}")
    for p in problems[:max_problems]:
        lines.append(f"  {p['path']}: {p['problem']}")
    if len(problems) > max_problems:
        lines.append(f"  ... (+{len(problems) - max_problems} more; --json lists all)")
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())
