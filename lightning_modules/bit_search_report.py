"""The bit search's report: table (Markdown, CSV), Figure 3 (PNG: accuracy against measured speed and against
GBOPs), W&B table and image, console summary.

All read the summary that :func:`lightning_modules.bit_search_driver.run_search` writes to ``search.json``, so a
report can be redrawn from that file alone.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _readings(summary: dict) -> dict[str, list[dict]]:
    return summary.get("readings") or {summary.get("reading", "layer_drops"): summary["searched"]}


def write_report(summary: dict, out: Path) -> None:
    """``bit_search_table.md``/``.csv``: one row per layer of every searched configuration (each reading, each
    D) and uniform Q, then its total (predicted and measured accuracy, BOPs, summed layer ms, whole-network
    ms); ``figure3.png`` (:func:`figure3`)."""
    header = ["config", "layer", "k", "Q", "predicted", "predicted ΣA", "accuracy", "BOPs", "ms", "network ms"]
    rows = []
    metric = summary["metric"]
    entries = [(f"D={r['allowed_drop']:g} ({reading})", r) for reading, rs in _readings(summary).items() for r in rs]
    entries += [(f"uniform Q={r['uniform_bits']}", r) for r in summary["uniform"]]
    for label, entry in entries:
        if "bits" not in entry:
            rows.append([label, "infeasible", "", "", "", "", "", "", "", ""])
            continue
        for lay in entry["layers"]:
            rows.append(
                [
                    label,
                    lay["layer"],
                    lay["k"],
                    lay["bits"],
                    _fmt(lay["table_accuracy"], ".2f"),
                    "",
                    "",
                    lay["bops"],
                    _fmt(lay["ms"], ".3f"),
                    "",
                ]  # fmt: skip
            )
        rows.append(
            [label, "total", "", "", _fmt(entry.get("predicted_accuracy"), ".2f"),
             _fmt(entry.get("predicted_additive"), ".2f"), f"{entry['accuracy']:.2f}", round(entry["gbops"] * 1e9),
             _fmt(entry["ms"], ".3f"), _fmt(entry.get("network_ms"), ".3f")]
        )  # fmt: skip
    float_ms = summary.get("float_network_ms")
    lines = [
        f"R = {summary['R']:.2f} % {metric} ({summary['reference_used']}; float {summary['reference']['float']:.2f} %, "
        f"decomposed {summary['reference']['decomposed']:.2f} %, {summary['images']} images). Per-layer "
        "'predicted': the table entry S of the layer's pair in that reading (uniform Q: the measured pair table); "
        "total 'predicted': the lowest S along the chosen pairs (the paper's 提案手法*); 'predicted ΣA' (layer_drops): "
        "R minus every layer's drop from A; 'accuracy': measured with "
        "every layer at its Q. 'ms': the searched layers' bit-serial kernels summed; 'network ms': the whole "
        f"network bit-serially, batch 1 (float network: {_fmt(float_ms, '.3f') or 'not measured'} ms).",
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
    plot_figure3(summary, out / "figure3.png")


READING_STYLE = {"layer_drops": ("o", "C0", "A"), "measured_pairs": ("D", "C3", "pairs")}


def _label_candidates(max_radius: float = 90.0) -> list[tuple[float, float]]:
    """Offsets (points) around a marker, nearest first, in eight directions at growing distance."""
    directions = [(1, 0.4), (1, -1), (-1, 0.4), (-1, -1), (0, 1.2), (0, -1.6), (1, 1.4), (-1, 1.4)]
    out = []
    radius = 5.0
    while radius <= max_radius:
        out += [(dx * radius, dy * radius) for dx, dy in directions]
        radius *= 1.5
    return out


def place_labels(ax, items: list[tuple[float, float, str]], fontsize: float = 7) -> list:
    """Annotate each (x, y, text) at the nearest offset where its box overlaps no label placed before it, no
    marker of ``ax`` and stays inside the axes; far labels get a leader line. Returns the text artists.

    Placed greedily, left to right; the candidates (eight directions at growing distance, up to ~90 points)
    are many more than the labels of a bit-search figure, so a free place is found in practice; if none is,
    the least-overlapping one is taken.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    markers = []  # display-space boxes of every plotted marker (a label must not hide a point)
    for line in ax.get_lines():
        if line.get_marker() in (None, "None", "", " "):
            continue
        for px, py in ax.transData.transform(line.get_xydata()):
            markers.append((px - 3, py - 3, px + 3, py + 3))
    legend = ax.get_legend()
    if legend is not None:
        box = legend.get_window_extent(renderer)
        markers.append((box.x0, box.y0, box.x1, box.y1))
    axes_box = ax.get_window_extent(renderer)
    placed: list[tuple[float, float, float, float]] = []
    texts = []

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    for x, y, text in sorted(items, key=lambda item: (item[0], item[1])):
        best, best_cost = None, float("inf")
        for dx, dy in _label_candidates():
            far = (dx * dx + dy * dy) ** 0.5 > 12
            artist = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                ha="left" if dx >= 0 else "right", va="center",
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5"} if far else None,
            )  # fmt: skip
            box = artist.get_window_extent(renderer)
            bounds = (box.x0 - 1, box.y0 - 1, box.x1 + 1, box.y1 + 1)
            inside = axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1 and axes_box.y0 <= box.y0 and box.y1 <= axes_box.y1
            cost = sum(overlap(bounds, b) for b in placed) + sum(overlap(bounds, m) for m in markers)
            cost += 0.0 if inside else 1e6
            if cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (artist, bounds), cost
            else:
                artist.remove()
            if cost == 0:
                break
        assert best is not None
        best[0].set_gid("point-label")
        placed.append(best[1])
        texts.append(best[0])
    return texts


def _groups(summary: dict) -> dict[tuple, dict]:
    """Distinct measured configurations of the searched readings: bits → {x values, accuracy, label parts}."""
    groups: dict[tuple, dict] = {}
    for reading, rows in summary.get("readings", {summary.get("reading", "layer_drops"): summary["searched"]}).items():
        for r in rows:
            if r["feasible"]:
                g = groups.setdefault(tuple(r["bits"]), {"row": r, "parts": {}})
                g["parts"].setdefault(reading, []).append(f"{r['allowed_drop']:g}")
    return groups


def figure3(summary: dict):
    """Figure 3 of the paper as a two-panel figure: accuracy against measured ms per image of the whole network
    (bit-serial kernel, batch 1, CPU; the float network beside it) and against GBOPs. Every D of every reading
    (measured ●/◆, predicted ×) and the uniform-Q points; labels placed so that none overlaps."""
    from plotting.plots import plt

    fig, (speed, ops) = plt.subplots(1, 2, figsize=(12, 4.8))
    metric = summary["metric"]
    readings = summary.get("readings", {summary.get("reading", "layer_drops"): summary["searched"]})
    uni = summary["uniform"]
    for ax, key in ((speed, "network_ms"), (ops, "gbops")):
        timed = [r for r in uni if r.get(key) is not None]
        ax.plot([r[key] for r in timed], [r["accuracy"] for r in timed], "s--", color="grey", label="uniform Q")
        for reading, rows in readings.items():
            marker, color, _short = READING_STYLE.get(reading, ("o", "C0", reading))
            found = [r for r in rows if r["feasible"] and r.get(key) is not None]
            ax.plot([r[key] for r in found], [r["accuracy"] for r in found], marker, color=color, ls="none",
                    label=f"search, {reading} (measured)")  # fmt: skip
            ax.plot([r[key] for r in found], [r["predicted_accuracy"] for r in found], "x", color=color, ls="none",
                    label=f"search, {reading} (predicted)")  # fmt: skip
        ax.axhline(summary["R"], color="k", lw=0.8, label="R (before quantisation)")
        ax.set_ylabel(f"{metric} [%]")
        ax.grid(alpha=0.3)
    if summary.get("float_network_ms") is not None:
        speed.plot([summary["float_network_ms"]], [summary["reference"]["float"]], "*", color="C2", ms=10,
                   ls="none", label="float network")  # fmt: skip
    speed.set_xlabel("ms per image, whole network (bit-serial kernel, batch 1, CPU)")
    ops.set_xlabel("GBOPs per image (searched layers)")
    if not any(r.get("network_ms") is not None for r in uni):
        speed.text(0.5, 0.5, "speed not measured\n(network_ms: false)", transform=speed.transAxes,
                   ha="center", va="center", color="0.4")  # fmt: skip
    for ax, key in ((speed, "network_ms"), (ops, "gbops")):
        items = [(r[key], r["accuracy"], f"Q={r['uniform_bits']}") for r in uni if r.get(key) is not None]
        for g in _groups(summary).values():
            if g["row"].get(key) is None:
                continue
            parts = g["parts"]
            many = len(readings) > 1
            text = " ".join(
                f"D={','.join(ds)}" + (f" ({READING_STYLE.get(rd, ('', '', rd))[2]})" if many else "")
                for rd, ds in parts.items()
            )
            items.append((g["row"][key], g["row"]["accuracy"], text))
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        place_labels(ax, items)
    return fig


def plot_figure3(summary: dict, path: Path) -> Path:
    """:func:`figure3` saved as PNG."""
    from plotting.plots import plt

    fig = figure3(summary)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _result_rows(summary: dict) -> list[list]:
    """reading, D, bits, predicted, measured, GBOPs, network ms (one row per D of each reading, then uniform Q)."""
    rows = []
    for reading, rs in _readings(summary).items():
        for r in rs:
            rows.append([reading, r["allowed_drop"], r.get("bits"), r.get("predicted_accuracy"), r.get("accuracy"),
                         r.get("gbops"), r.get("network_ms")])  # fmt: skip
    rows += [
        ["uniform", None, r["bits"], None, r["accuracy"], r["gbops"], r.get("network_ms")] for r in summary["uniform"]
    ]
    return rows


def log_wandb(trainer: L.Trainer, summary: dict, out: Path) -> None:
    """The results table and Figure 3 to every W&B logger of ``trainer``."""
    from lightning.pytorch.loggers import WandbLogger

    columns = ["reading", "D", "bits", "predicted", "accuracy", "gbops", "network_ms"]
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            rows = [[*r[:2], str(r[2]), *r[3:]] for r in _result_rows(summary)]
            logger.log_table("search/results", columns=columns, data=rows)
            logger.log_image("search/figure3", images=[str(out / "figure3.png")])
            logger.log_metrics({f"search/{summary['metric']}_reference": summary["R"]})


def print_summary(summary: dict, out: Path) -> None:
    """The results table and the evaluation counts on stderr."""
    from rich.console import Console
    from rich.table import Table

    c = summary["counts"]
    float_ms = summary.get("float_network_ms")
    table = Table(
        title=f"bit search ({summary['metric']}, R = {summary['R']:.2f} %, {summary['images']} images; "
        f"float network {_fmt(float_ms, '.2f') or '-'} ms/image)"
    )
    for col in ("reading", "D", "bits", "predicted", "measured", "GBOPs", "ms/image"):
        table.add_column(col)
    for reading, d, bits, predicted, measured, gbops, ms in _result_rows(summary):
        if bits is None:
            table.add_row(reading, f"{d:g}", "infeasible", "", "", "", "")
            continue
        table.add_row(reading, "" if d is None else f"{d:g}", str(bits), _fmt(predicted, ".2f"),
                      _fmt(measured, ".2f"), _fmt(gbops, ".4f"), _fmt(ms, ".2f"))  # fmt: skip
    console = Console(stderr=True, width=max(120, Console(stderr=True).width))
    console.print(table)
    console.print(
        f"table entries {c['entries']}, decomposed-layer forwards {c['layer_forwards']} "
        f"(naive re-evaluation: {c['naive_layer_forwards']}); results in {out}"
    )
