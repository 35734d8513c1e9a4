"""Tables that stay readable wherever they are printed: a terminal, a SLURM log, a pipe.

Rich squeezes a table to 80 columns when the output is not a terminal (names cut to ``conv…``), and a fixed wide
console prints 230-character lines. Here a table is printed whole on a terminal; elsewhere it is printed as
Markdown in column groups that each fit ``width`` characters (the first column repeated in every group), and the
whole table can be written as Markdown and CSV files whose paths are printed.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; right-aligned columns where every cell reads as a number."""
    cells = [[str(c) for c in row] for row in rows]

    def numeric(j: int) -> bool:
        values = [row[j].replace(",", "").replace("%", "").strip() for row in cells if row[j] not in ("", "—", "-")]
        try:
            [float(v) for v in values]
        except ValueError:
            return False
        return bool(values)

    align = ["---:" if numeric(j) else "---" for j in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def column_groups(header: Sequence[str], rows: Sequence[Sequence[object]], width: int) -> list[list[int]]:
    """Indices of columns per group: column 0 in every group, then as many columns as fit ``width`` characters."""
    sizes = [max(len(str(header[j])), *(len(str(r[j])) for r in rows)) + 3 for j in range(len(header))]
    groups: list[list[int]] = []
    current = [0]
    used = sizes[0] + 1
    for j in range(1, len(header)):
        if len(current) > 1 and used + sizes[j] > width:
            groups.append(current)
            current, used = [0], sizes[0] + 1
        current.append(j)
        used += sizes[j]
    groups.append(current)
    return groups


def print_table(
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    stream: TextIO | None = None,
    width: int = 120,
) -> None:
    """``title`` and the table: whole on a terminal, in column groups of at most ``width`` characters elsewhere."""
    out = stream if stream is not None else sys.stdout
    terminal = hasattr(out, "isatty") and out.isatty()
    groups = [list(range(len(header)))] if terminal else column_groups(header, rows, width)
    print(title, file=out)
    for n, group in enumerate(groups):
        if n:
            print(file=out)
        print(markdown([header[j] for j in group], [[row[j] for j in group] for row in rows]), file=out)


def write_table(path_stem: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[Path]:
    """``<stem>.md`` and ``<stem>.csv`` with the whole table; returns the two paths."""
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    md, csv_path = path_stem.with_suffix(".md"), path_stem.with_suffix(".csv")
    md.write_text(markdown(header, rows) + "\n", encoding="utf-8")
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return [md, csv_path]
