"""Figure 4 / Figure 6 of Takase et al. from finished runs: accuracy (or mAP) against data reduction, per regime
and k, with classical codecs at the same bytes on the same axes; PNG + CSV + a printed table.

    python -m benchmarks.decoded_recognition_report runs/cir_imagenet10_* --out runs/cir_imagenet10_report
    python -m benchmarks.decoded_recognition_report --wandb ENTITY/splitcv --out report/   # from W&B instead

Output: ``--out``/decoded_recognition.csv (every column), decoded_recognition_table.md (the printed table) and one
PNG per task; the table is printed whole at any width (Markdown when the output is not a terminal, e.g. a log).

Inputs: run directories (or folders above them) holding ``results/test.json`` or ``results/val.json``, which
``CompressedImageRecognition`` writes at the end of every test / validation; or a W&B project, whose
``CompressedImageRecognition`` runs are read through the public API (their config and summary).

Data reduction is ``1 − Σ bytes sent / Σ source JPEG bytes`` over the evaluation images (the paper's Table 1
basis; see :mod:`lightning_modules.compressed_image_recognition`), in percent. A regime evaluated on original
images sends the source files, so its reduction is 0 whatever k: the paper's Figure 4 places its
"uncompressed-image model" elsewhere; here every point sits at the bytes that were really sent.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402

from benchmarks.table_output import print_table as print_table_at_any_width  # noqa: E402
from benchmarks.table_output import write_table  # noqa: E402
from lightning_modules.compressed_image_recognition import REGIMES  # noqa: E402

MODULE = "lightning_modules.compressed_image_recognition.CompressedImageRecognition"
SCORE = {"classification": ("acc_top1", "top-1 accuracy [%]"), "detection": ("map50", "mAP@0.5, VOC07 11-point [%]")}
COLUMNS = [
    "task", "regime", "paper_regime", "channel", "k", "score_pct", "data_reduction_pct", "bytes_per_image",
    "source_bytes_per_image", "bpp", "stage", "run",
]  # fmt: skip
REGIME_STYLE = {
    "conventional": ("black", "s"),
    "uncompressed_image_model": ("tab:blue", "o"),
    "compressed_image_model": ("tab:red", "o"),
    "original_on_compressed": ("tab:green", "o"),
}
CODEC_MARKER = {"jpeg": "^", "webp": "v", "avif": "D", "hevc": "P"}


def row_from_summary(summary: dict[str, Any], stage: str, run: str) -> dict[str, Any] | None:
    """One table row from a run's setting and its ``{stage}/…`` metrics (``None`` when a metric is missing)."""
    metrics = summary.get("metrics", summary)
    name, _ = SCORE[summary["task"]]
    needed = (f"{stage}/{name}", f"{stage}/data_reduction", f"{stage}/bytes_per_image")
    if any(key not in metrics for key in needed):
        return None
    regime, paper = REGIMES[(summary["train_on"], summary["eval_on"])]
    return {
        "task": summary["task"],
        "regime": regime,
        "paper_regime": paper,
        "channel": summary["channel"] if regime != "conventional" else "original",
        "k": int(summary["iterations"]) if regime != "conventional" else "",
        "score_pct": 100.0 * float(metrics[f"{stage}/{name}"]),
        "data_reduction_pct": 100.0 * float(metrics[f"{stage}/data_reduction"]),
        "bytes_per_image": float(metrics[f"{stage}/bytes_per_image"]),
        "source_bytes_per_image": float(metrics.get(f"{stage}/source_bytes_per_image", float("nan"))),
        "bpp": float(metrics.get(f"{stage}/bpp", float("nan"))),
        "stage": stage,
        "run": run,
    }


def rows_from_run_dirs(paths: Iterable[str | Path], stage: str | None = None) -> list[dict[str, Any]]:
    """Rows of every run directory under ``paths``: its ``results/test.json``, else ``results/val.json``
    (only the given ``stage`` when set)."""
    rows = []
    found: set[Path] = set()
    for path in paths:
        for results in sorted(Path(path).rglob("results")):
            if not results.is_dir() or results in found:
                continue
            found.add(results)
            for candidate in (stage,) if stage else ("test", "val"):
                file = results / f"{candidate}.json"
                if file.is_file():
                    row = row_from_summary(json.loads(file.read_text()), candidate, str(results.parent))
                    if row is not None:
                        rows.append(row)
                        break
    return rows


def rows_from_wandb(project: str, stage: str = "test") -> list[dict[str, Any]]:
    """Rows of the ``CompressedImageRecognition`` runs of a W&B project (``ENTITY/PROJECT``), through its API."""
    import wandb

    rows = []
    for run in wandb.Api().runs(project):
        config = dict(run.config)
        model = config.get("model", {})
        if isinstance(model, dict) and model.get("class_path") == MODULE:
            config = {**config, **model.get("init_args", {})}
        if not {"task", "train_on", "eval_on", "channel", "iterations"} <= set(config):
            continue
        summary = {**config, "metrics": dict(run.summary)}
        row = row_from_summary(summary, stage, run.path if isinstance(run.path, str) else "/".join(run.path))
        if row is not None:
            rows.append(row)
    return rows


def _sort_key(row: dict[str, Any]) -> tuple:
    return (
        row["task"],
        list(REGIME_STYLE).index(row["regime"]),
        row["channel"] != "rnn",
        row["channel"],
        str(row["k"]),
    )


def plot(rows: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """One PNG per task: score against data reduction; lines join k = 1, 2, 3 of one regime and channel."""
    written = []
    for task in sorted({r["task"] for r in rows}):
        figure, axes = plt.subplots(figsize=(7, 5))
        task_rows = [r for r in rows if r["task"] == task]
        series: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in task_rows:
            series.setdefault((row["regime"], row["channel"]), []).append(row)
        for (regime, channel), points in sorted(series.items()):
            points.sort(key=lambda r: (r["k"] == "", r["k"]))
            color, marker = REGIME_STYLE[regime]
            classical = channel in CODEC_MARKER
            label = regime if regime == "conventional" else f"{regime}, {channel}"  # paper names: CSV, table
            axes.plot(
                [p["data_reduction_pct"] for p in points],
                [p["score_pct"] for p in points],
                marker=CODEC_MARKER.get(channel, marker),
                color=color,
                linestyle=":" if classical else "-",
                alpha=0.6 if classical else 1.0,
                label=label,
            )
            for p in points:
                if p["k"] != "":
                    axes.annotate(f"k={p['k']}", (p["data_reduction_pct"], p["score_pct"]), fontsize=7,
                                  textcoords="offset points", xytext=(4, 3))  # fmt: skip
        axes.set_xlabel("data reduction vs the source JPEG files [%]")
        axes.set_ylabel(SCORE[task][1])
        axes.set_title(
            f"{task}: recognition on decoded images ({'Figure 4' if task == 'classification' else 'Figure 6'})"
        )
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="lower left")
        figure.tight_layout()
        path = out / f"decoded_recognition_{task}.png"
        figure.savefig(path, dpi=130)
        plt.close(figure)
        written.append(path)
    return written


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


TABLE_COLUMNS = ["task", "regime", "paper", "channel", "k", "score %", "reduction %", "bytes/image", "source bytes"]
TABLE_TITLE = "Recognition on decoded images: score against data reduction"


def table_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The printed table's cells of each row (names in full, numbers rounded)."""
    return [
        {"task": r["task"], "regime": r["regime"], "paper": r["paper_regime"], "channel": r["channel"],
         "k": str(r["k"]), "score %": f"{r['score_pct']:.2f}", "reduction %": f"{r['data_reduction_pct']:.2f}",
         "bytes/image": f"{r['bytes_per_image']:.0f}", "source bytes": f"{r['source_bytes_per_image']:.0f}"}
        for r in rows
    ]  # fmt: skip


def print_table(rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    """The table on the console: a Rich table on a terminal (cells fold, never cut), Markdown text otherwise."""
    print_table_at_any_width(TABLE_COLUMNS, table_rows(rows), TABLE_TITLE, right=TABLE_COLUMNS[4:], console=console)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.decoded_recognition_report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("runs", nargs="*", help="run directories or folders above them (holding results/*.json)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from this W&B project instead")
    parser.add_argument("--stage", choices=["test", "val"], help="which results to read (default: test, else val)")
    parser.add_argument("--out", default="runs/decoded_recognition_report", help="folder for the CSV and PNGs")
    args = parser.parse_args(argv)
    if not args.runs and not args.wandb:
        parser.error("give run directories, or --wandb ENTITY/PROJECT")
    rows = (
        rows_from_wandb(args.wandb, args.stage or "test") if args.wandb else rows_from_run_dirs(args.runs, args.stage)
    )
    if not rows:
        parser.error(f"no finished CompressedImageRecognition results found in {args.wandb or args.runs}")
    rows.sort(key=_sort_key)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "decoded_recognition.csv")
    md, _ = write_table(TABLE_COLUMNS, table_rows(rows), out / "decoded_recognition_table", TABLE_TITLE,
                        right=TABLE_COLUMNS[4:])  # fmt: skip
    pngs = plot(rows, out)
    print_table(rows)
    print(f"wrote {out / 'decoded_recognition.csv'}, {md} and {', '.join(str(p) for p in pngs)}")
    return rows


if __name__ == "__main__":
    main()
