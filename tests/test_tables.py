"""The one markdown table writer (run report, comparison tables, benchmark pages)."""

from __future__ import annotations

from facedapt.tables import markdown


def test_markdown_table_with_caption_and_escaped_cells() -> None:
    text = markdown(["method", "accuracy %"], [["pada", 55.4], ["a|b", "two\nlines"]], "Caption")
    assert text == ("Caption\n\n| method | accuracy % |\n|---|---|\n| pada | 55.4 |\n| a\\|b | two lines |\n")
    assert markdown(["x"], []) == "| x |\n|---|\n"
