"""Every split method side by side, from finished runs: one table and one figure of accuracy against bytes sent.

    python -m benchmarks.split_report runs/code_recognition_demo runs/shared_trunk_demo runs/cir_demo --out runs/split_report

Inputs: run directories (or folders above them) holding ``results/test.json`` or ``results/val.json`` in the
one results schema (:mod:`callbacks.results_record`), which every recognition method writes — recognition on
decoded images, on codes, the shared trunk, and the compressor's rate–distortion.

Outputs in ``--out``: ``split_report.csv`` and ``split_report.md`` (every column), ``split_report.png`` (left:
accuracy — top-1, or mAP@0.5 for detection — against real bytes per image, one colour per method, classical
codecs at matched bytes dotted as reference curves; right: the edge's GMACs against the same bytes, each
point labelled with the edge's ms where the run timed it), and a compact table printed to the terminal.
The question it answers: for my accuracy, which split sends the fewest bytes and costs the device least?
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.table_output import print_table as print_plain_table
from models import metric_names as mn

# Lightning, torch and matplotlib are imported where they are used, so that `--help` answers at once.

COPIED = (*mn.RATES, *mn.RECORD_COSTS, "checkpoint_sha256")
"""Columns copied from the record as they are."""
COLUMNS = [
    *("method", "setting", "k", "codec", "dataset", "stage", "score_name", "score_pct", "acc_top5_pct"),
    *COPIED,
    "run",
]
METHOD_COLOR = {
    "decoded_images": "tab:red",
    "codes": "tab:blue",
    "shared_trunk": "tab:green",
    "rate_distortion": "tab:gray",
}


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def row_from_record(record: dict[str, Any], run: str) -> dict[str, Any]:
    """One table row of a results record."""
    score_name = next((name for name in (mn.ACC_TOP1, mn.MAP50) if record.get(name) is not None), None)
    return {
        "method": record["method"],
        "setting": record["setting"] or "",
        "k": record["k"],
        "codec": record["codec"],
        "dataset": record["dataset"],
        "stage": record["stage"],
        "score_name": score_name,
        "score_pct": _pct(record[score_name]) if score_name else None,
        "acc_top5_pct": _pct(record.get(mn.ACC_TOP5)),
        **{name: record[name] for name in COPIED},
        "run": run,
    }


def records_of(paths: Iterable[str | Path], stage: str | None = None) -> list[tuple[dict[str, Any], str]]:
    """``(record, run directory)`` of every run under ``paths``: its ``results/test.json``, else
    ``results/val.json`` (only ``stage`` when given).

    Raises:
        ValueError: a results file that is not a record of the schema, naming it.
        FileNotFoundError: a path that does not exist.
    """
    from callbacks.results_record import RESULTS_DIR, read_record

    found: dict[Path, tuple[dict[str, Any], str]] = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run directory")
        candidates = [path / RESULTS_DIR] if (path / RESULTS_DIR).is_dir() else sorted(path.rglob(RESULTS_DIR))
        for results in candidates:
            if not results.is_dir() or results.resolve() in found:
                continue
            for candidate in (stage,) if stage else ("test", "val"):
                file = results / f"{candidate}.json"
                if file.is_file():
                    found[results.resolve()] = (read_record(file), str(results.parent))
                    break
    return list(found.values())


def _sort_key(row: dict[str, Any]) -> tuple:
    method = list(METHOD_COLOR).index(row["method"]) if row["method"] in METHOD_COLOR else len(METHOD_COLOR)
    return (method, row["method"], str(row["codec"]), row[mn.BYTES_PER_IMAGE] or 0.0, row["setting"])


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_markdown(rows: Sequence[dict[str, Any]], path: Path) -> None:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c], 4) for c in COLUMNS) + " |" for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


COMPACT = ("method", "setting", "score %", "bytes/img", "edge GMACs", "edge ms")


def print_table(rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    """The compact view: what answers the question (the files hold every column); never cuts a name, on a
    terminal or in a log (:func:`benchmarks.table_output.print_table`)."""
    compact = []
    for r in rows:
        score = (
            "" if r["score_pct"] is None else f"{r['score_pct']:.2f}" + (" mAP" if r["score_name"] == mn.MAP50 else "")
        )
        values = (
            r["method"],
            r["setting"],
            score,
            _fmt(r[mn.BYTES_PER_IMAGE], 0),
            "" if r[mn.GMACS_EDGE] is None else f"{r[mn.GMACS_EDGE]:.3g}",
            _fmt(r[mn.MS_EDGE], 2),
        )
        compact.append(dict(zip(COMPACT, values, strict=True)))
    print_plain_table(
        COMPACT, compact, title="Split methods: accuracy, bytes sent, edge cost", right=COMPACT[2:], console=console
    )


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Accuracy and edge GMACs against bytes per image, one series per method and codec."""
    from coding.image_channel import CLASSICAL
    from plotting.plots import plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    series: dict[tuple[str, str | None, str | None], list[dict[str, Any]]] = {}
    for row in rows:
        if row[mn.BYTES_PER_IMAGE] is not None:
            series.setdefault((row["method"], row["codec"], row["score_name"]), []).append(row)
    for (method, codec, score_name), points in sorted(series.items(), key=lambda kv: tuple(map(str, kv[0]))):
        points.sort(key=lambda r: r[mn.BYTES_PER_IMAGE])
        reference = method == "decoded_images" and codec in CLASSICAL  # a classical codec at matched bytes
        style = {
            "color": METHOD_COLOR.get(method, "tab:purple"),
            "marker": "^" if reference else "o",
            "linestyle": ":" if reference else "-",
            "alpha": 0.6 if reference else 1.0,
        }
        label = method + (f", {codec}" if codec else "") + (" (mAP@0.5)" if score_name == mn.MAP50 else "")
        x = [p[mn.BYTES_PER_IMAGE] for p in points]
        scored = [(xi, p) for xi, p in zip(x, points, strict=True) if p["score_pct"] is not None]
        if scored:
            left.plot([xi for xi, _ in scored], [p["score_pct"] for _, p in scored], label=label, **style)
            for xi, p in scored:
                left.annotate(p["setting"], (xi, p["score_pct"]), fontsize=6, textcoords="offset points", xytext=(3, 3))
        costed = [(xi, p) for xi, p in zip(x, points, strict=True) if p[mn.GMACS_EDGE] is not None]
        if costed:
            right.plot([xi for xi, _ in costed], [p[mn.GMACS_EDGE] for _, p in costed], label=label, **style)
            for xi, p in costed:
                if p[mn.MS_EDGE] is not None:
                    note = f"{p[mn.MS_EDGE]:.1f} ms"
                    right.annotate(note, (xi, p[mn.GMACS_EDGE]), fontsize=6, textcoords="offset points", xytext=(3, 3))
    for axes in (left, right):
        axes.set_xscale("log")
        axes.set_xlabel("bytes per image (real, headers included)")
        axes.grid(alpha=0.3, which="both")
    left.set_ylabel("top-1 accuracy or mAP@0.5 [%]")
    left.set_title("accuracy against bytes sent")
    right.set_ylabel("edge GMACs per image")
    right.set_title("device cost against bytes sent (labels: edge ms)")
    handles, labels = left.get_legend_handles_labels()
    extra = [(h, lab) for h, lab in zip(*right.get_legend_handles_labels(), strict=True) if lab not in labels]
    if handles or extra:
        figure.legend(
            handles + [h for h, _ in extra], labels + [lab for _, lab in extra], fontsize=7, loc="lower center", ncol=4
        )
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.split_report", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or folders above them (holding results/*.json)")
    parser.add_argument("--stage", choices=["test", "val"], help="which results to read (default: test, else val)")
    parser.add_argument("--out", default="runs/split_report", help="folder for the table (CSV, Markdown) and PNG")
    args = parser.parse_args(argv)
    try:
        records = records_of(args.runs, args.stage)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if not records:
        parser.error(f"no results/{{test,val}}.json found under {args.runs}")
    rows = sorted((row_from_record(record, run) for record, run in records), key=_sort_key)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "split_report.csv")
    write_markdown(rows, out / "split_report.md")
    png = plot(rows, out / "split_report.png")
    print_table(rows)
    print(f"wrote {out / 'split_report.md'}, {out / 'split_report.csv'} and {png}", file=sys.stdout)
    return rows


if __name__ == "__main__":
    main()
