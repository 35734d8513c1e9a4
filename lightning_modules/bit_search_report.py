"""The bit search's report: table (Markdown, CSV), Pareto plot (PNG), W&B table and image, console summary.

All read the summary that :func:`lightning_modules.bit_search.run_search` writes to ``search.json``, so a
report can be redrawn from that file alone.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L


def write_report(summary: dict, out: Path) -> None:
    """``bit_search_table.md``/``.csv`` (one row per layer of every searched configuration and uniform Q)
    and ``pareto.png`` (accuracy against GBOPs)."""
    header = ["config", "layer", "k", "Q", "accuracy", "BOPs", "ms"]
    rows = []
    metric = summary["metric"]
    for entry in summary["searched"] + summary["uniform"]:
        if "bits" not in entry:
            rows.append([f"D={entry['allowed_drop']}", "infeasible", "", "", "", "", ""])
            continue
        label = f"D={entry['allowed_drop']}" if "allowed_drop" in entry else f"uniform Q={entry['uniform_bits']}"
        for lay in entry["layers"]:
            acc = lay["table_accuracy"]
            rows.append(
                [
                    label,
                    lay["layer"],
                    lay["k"],
                    lay["bits"],
                    "" if acc is None else f"{acc:.2f}",
                    lay["bops"],
                    "" if lay["ms"] is None else f"{lay['ms']:.3f}",
                ]  # fmt: skip
            )
        ms = "" if entry["ms"] is None else f"{entry['ms']:.3f}"
        rows.append([label, "total", "", "", f"{entry['accuracy']:.2f}", int(entry["gbops"] * 1e9), ms])
    lines = [
        f"R = {summary['R']:.2f} % {metric} ({summary['reference_used']}; float {summary['reference']['float']:.2f} %, "
        f"decomposed {summary['reference']['decomposed']:.2f} %, {summary['images']} images). Per-layer accuracy: "
        "the table entry S of the layer's pair; total: measured with every layer at its Q.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    (out / "bit_search_table.md").write_text("\n".join(lines) + "\n")
    with open(out / "bit_search_table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    plot_pareto(summary, out / "figure3.png")


def plot_pareto(summary: dict, path: Path) -> Path:
    from callbacks.plots import plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    uni = summary["uniform"]
    ax.plot([r["gbops"] for r in uni], [r["accuracy"] for r in uni], "s--", color="grey", label="uniform Q")
    for r in uni:
        ax.annotate(
            f"Q={r['uniform_bits']}",
            (r["gbops"], r["accuracy"]),
            fontsize=7,
            xytext=(3, -9),
            textcoords="offset points",
        )
    found = [r for r in summary["searched"] if r["feasible"]]
    ax.plot([r["gbops"] for r in found], [r["accuracy"] for r in found], "o", color="C0", label="search (measured)")
    ax.plot(
        [r["gbops"] for r in found],
        [r["predicted_accuracy"] for r in found],
        "x",
        color="C1",
        label="search (predicted)",
    )
    same: dict[tuple, list] = {}
    for r in found:  # one label per distinct choice: "D=4,7,10"
        same.setdefault(tuple(r["bits"]), []).append(r)
    for rows in same.values():
        label = "D=" + ",".join(f"{r['allowed_drop']:g}" for r in rows)
        ax.annotate(
            label, (rows[0]["gbops"], rows[0]["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    points = [(r["gbops"], r["accuracy"]) for r in found] + [(r["gbops"], r["accuracy"]) for r in uni]
    front = [points[i] for i in summary["pareto"]]
    ax.step([c for c, _ in front], [a for _, a in front], where="post", color="C2", lw=1, label="Pareto front")
    ax.axhline(summary["R"], color="k", lw=0.8, label="R (before quantisation)")
    ax.set_xlabel("GBOPs per image (searched layers)")
    ax.set_ylabel(f"{summary['metric']} [%]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_wandb(trainer: L.Trainer, summary: dict, out: Path) -> None:
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            rows = [
                [
                    r["allowed_drop"],
                    str(r.get("bits")),
                    r.get("accuracy"),
                    r.get("predicted_accuracy"),
                    r.get("gbops"),
                    r.get("ms"),
                ]
                for r in summary["searched"]
            ] + [[None, str(r["bits"]), r["accuracy"], None, r["gbops"], r["ms"]] for r in summary["uniform"]]
            logger.log_table("search/results", columns=["D", "bits", "accuracy", "predicted", "gbops", "ms"], data=rows)
            logger.log_image("search/figure3", images=[str(out / "figure3.png")])
            logger.log_metrics({f"search/{summary['metric']}_reference": summary["R"]})


def print_summary(summary: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    c = summary["counts"]
    table = Table(title=f"bit search ({summary['metric']}, R = {summary['R']:.2f} %, {summary['images']} images)")
    for col in ("D", "bits", "predicted", "measured", "GBOPs", "ms"):
        table.add_column(col)
    for r in summary["searched"]:
        if not r["feasible"]:
            table.add_row(f"{r['allowed_drop']:g}", "infeasible", "", "", "", "")
            continue
        ms = "" if r["ms"] is None else f"{r['ms']:.2f}"
        table.add_row(
            f"{r['allowed_drop']:g}",
            str(r["bits"]),
            f"{r['predicted_accuracy']:.2f}",
            f"{r['accuracy']:.2f}",
            f"{r['gbops']:.4f}",
            ms,
        )
    for r in summary["uniform"]:
        ms = "" if r["ms"] is None else f"{r['ms']:.2f}"
        table.add_row("uniform", str(r["bits"]), "", f"{r['accuracy']:.2f}", f"{r['gbops']:.4f}", ms)
    console = Console(stderr=True)
    console.print(table)
    console.print(
        f"table entries {c['entries']}, decomposed-layer forwards {c['layer_forwards']} "
        f"(naive re-evaluation: {c['naive_layer_forwards']}); results in {out}"
    )
