"""Markdown tables: the one writer behind the run report, comparison tables and benchmark pages."""

from __future__ import annotations

from collections.abc import Sequence


def cell(text: object) -> str:
    """A value as one table cell: a ``|`` would end the cell and a newline the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(header: Sequence[object], cells: Sequence[Sequence[object]], caption: str = "") -> str:
    """A GitHub-flavoured markdown table (caption and a blank line above it when given), ending
    with a newline."""
    out = [caption, ""] if caption else []
    out += ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in cells]
    return "\n".join(out) + "\n"
