"""Tables that stay readable at any width: a Markdown and a CSV file, and a console table that never cuts a cell.

Rich sizes a table to the terminal, and to 80 columns when the output is not a terminal (a log file, a pipe,
a batch job), where it shortens long names to "…". :func:`print_table` prints a Rich table whose cells fold
instead when the output is a terminal, and plain Markdown otherwise — for wide tables in column groups that each
fit ``width`` characters (the columns that name a row repeated in every group), so that no log line runs to
230 characters;
:func:`write_table` writes the whole table as ``.md`` and ``.csv`` for a report.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _cells(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [["" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], right: Sequence[str] = ()) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (dicts, already formatted values) in ``columns`` order;
    columns padded to their widest cell, ``right`` aligned right."""
    cells = _cells(columns, rows)
    widths = [max(3, len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        padded = [v.rjust(w) if c in right else v.ljust(w) for v, w, c in zip(values, widths, columns, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if c in right else "-" * w for w, c in zip(widths, columns, strict=True)]
    return "\n".join([line(columns), "| " + " | ".join(rule) + " |", *(line(r) for r in cells)])


def column_groups(
    columns: Sequence[str], rows: Sequence[Mapping[str, Any]], width: int, keys: int = 1
) -> list[list[str]]:
    """Columns per group: the first ``keys`` columns (what names a row) in every group, then as many others as
    fit ``width`` Markdown characters."""
    cells = _cells(columns, rows)
    sizes = [max(3, len(c), *(len(r[i]) for r in cells)) + 3 for i, c in enumerate(columns)]
    head, used_by_head = list(columns[:keys]), sum(sizes[:keys]) + 1
    groups: list[list[str]] = []
    current, used = list(head), used_by_head
    for i in range(keys, len(columns)):
        if len(current) > keys and used + sizes[i] > width:
            groups.append(current)
            current, used = list(head), used_by_head
        current.append(columns[i])
        used += sizes[i]
    groups.append(current)
    return groups


def write_table(
    columns: Sequence[str], rows: Sequence[Mapping[str, Any]], stem: Path, title: str = "", right: Sequence[str] = ()
) -> tuple[Path, Path]:
    """``stem.md`` (title + Markdown table) and ``stem.csv``; returns their paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, table_csv = stem.with_suffix(".md"), stem.with_suffix(".csv")
    md.write_text((f"# {title}\n\n" if title else "") + markdown_table(columns, rows, right) + "\n", encoding="utf-8")
    with table_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(_cells(columns, rows))
    return md, table_csv


def print_table(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    title: str = "",
    right: Sequence[str] = (),
    console: Console | None = None,
    width: int | None = None,
    keys: int = 1,
) -> None:
    """A Rich table on a terminal (cells fold, never cut); off a terminal the Markdown text: one line per row, or
    with ``width`` in column groups of at most ``width`` characters, each repeating the first ``keys`` columns."""
    console = console or Console()
    if not console.is_terminal:
        groups = [list(columns)] if width is None else column_groups(columns, rows, width, keys)
        text = "\n\n".join(markdown_table(group, rows, right) for group in groups)
        console.file.write((f"{title}\n" if title else "") + text + "\n")
        console.file.flush()
        return
    table = Table(title=title or None)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", overflow="fold")
    for cells in _cells(columns, rows):
        table.add_row(*cells)
    console.print(table)
