"""Gather finished FBNet searches (and their children) into the paper's Tables 2/3 and Figures 6–7.

    python benchmarks/fbnet_report.py --runs runs --out runs/fbnet_report

A search run is a directory with ``export.json`` (written by ``FBNetSearch`` at the end of fit); its
child is ``<runs>/<name>_child/<same id>/`` (``slurm/fbnet_array.sbatch`` names them so), whose test
metrics are read from ``csv/metrics.csv`` when the test was logged with ``configs/logger/csv.yaml``.

Columns, per the paper's tables (their "推論速度" is the time for the 10,000 CIFAR-10 test images, their
energy the joules for the same): accuracy of the child on the test set (blank without a child test),
``table_s_10k`` = table latency (ms per image) × 10,000 / 1000, ``measured_s_10k`` = the child's
measured batch-1 ms per image × 10 (when tested), ``energy_j_10k`` = table energy (mJ per image) × 10,
parameters of the child network, and the paper's row where there is one. Writes
``table.md``, ``table.csv``, ``table.json`` and ``chosen_blocks_s1.png`` / ``chosen_blocks_s2.png``
(one row per model, one cell per layer coloured by block, skips white; S1 runs beside FBNet1/2, S2
runs beside FBNet3, as in Figures 6 and 7; runs of other names go into ``chosen_blocks_other.png``).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

from models.fbnet import FBNetChildNet, read_architecture
from plotting.fbnet_plots import plot_chosen_blocks

# the paper's Tables 2 and 3: accuracy %, seconds for 10,000 images (i7-6950X), joules (RPi 3B table), parameters M
PAPER = {
    "MobileNetV2": (94.2, 40.1, 21.1, 2.2),
    "FBNet1": (91.8, 16.3, 11.2, 0.66),
    "FBNet2": (91.7, 17.2, 9.55, 0.49),
    "FBNet3": (87.5, 5.20, 1.62, 0.23),
    "S1-L100": (90.0, 6.35, 3.46, 0.32),
    "S1-L80": (88.3, 4.48, 2.31, 0.30),
    "S1-L65": (86.5, 4.18, 1.67, 0.23),
    "S1-L50": (85.6, 4.83, 1.07, 0.21),
    "S1-L35": (70.0, 1.03, 0.450, 0.19),
    "S2-Normal": (87.4, 5.44, 1.62, 0.23),
    "S2-L80": (87.3, 5.21, 1.62, 0.23),
    "S2-L65": (85.2, 4.63, 1.07, 0.21),
    "S2-L50": (77.0, 4.50, 1.04, 0.20),
    "S2-L35": (69.3, 1.02, 0.450, 0.19),
}
COLUMNS = ["model", "run", "loss", "goal", "acc_pct", "table_s_10k", "measured_s_10k", "energy_j_10k", "params_m",
           "paper_acc_pct", "paper_s_10k", "paper_j_10k", "paper_params_m", "architecture"]  # fmt: skip


def paper_label(run_name: str) -> str:
    """``fbnet_s1_l35`` → ``S1-L35``, ``fbnet_s2_normal`` → ``S2-Normal``, ``fbnet_fbnet1`` → ``FBNet1``."""
    name = run_name.removeprefix("fbnet_")
    if m := re.fullmatch(r"(s[12])_l(\d+)", name):
        return f"{m[1].upper()}-L{m[2]}"
    if m := re.fullmatch(r"(s[12])_normal", name):
        return f"{m[1].upper()}-Normal"
    if m := re.fullmatch(r"fbnet(\d)", name):
        return f"FBNet{m[1]}"
    return run_name


def last_test_metrics(csv_path: Path) -> dict[str, float]:
    """The last logged value of every ``test/`` column of a Lightning CSV log."""
    out: dict[str, float] = {}
    if not csv_path.is_file():
        return out
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            out.update({k: float(v) for k, v in row.items() if k.startswith("test/") and v not in ("", None)})
    return out


def collect(runs: Path, architecture_file: str = "architecture_sampled.txt") -> list[dict]:
    """One row per finished search under ``runs`` (see the module docstring)."""
    rows = []
    for export in sorted(runs.glob("*/*/export.json")):
        run_dir = export.parent
        summary = json.loads(export.read_text())
        space, arch = read_architecture(run_dir / architecture_file)
        chosen = summary["best_sampled"] if architecture_file == "architecture_sampled.txt" else summary["argmax"]
        label = paper_label(run_dir.parent.name)
        child = runs / f"{run_dir.parent.name}_child" / run_dir.name
        metrics = last_test_metrics(child / "csv" / "metrics.csv")
        params = metrics.get("test/params", sum(p.numel() for p in FBNetChildNet(space, arch).parameters()))
        paper = PAPER.get(label, (None,) * 4)
        rows.append({
            "model": label, "run": str(run_dir), "loss": summary["loss"], "goal": summary["goal"],
            "acc_pct": 100 * metrics["test/acc_top1"] if "test/acc_top1" in metrics else None,
            "table_s_10k": chosen["latency_ms"] * 10, "energy_j_10k": chosen["energy_mj"] * 10,
            "measured_s_10k": metrics["test/ms_per_image"] * 10 if "test/ms_per_image" in metrics else None,
            "params_m": params / 1e6, "paper_acc_pct": paper[0], "paper_s_10k": paper[1], "paper_j_10k": paper[2],
            "paper_params_m": paper[3], "architecture": arch,
        })  # fmt: skip
    return rows


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return " ".join(value)
    return str(value)


def write_report(rows: list[dict], out: Path) -> dict[str, Path]:
    """``table.{md,csv,json}`` and the chosen-blocks figures into ``out``; returns the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "table.json", "csv": out / "table.csv", "md": out / "table.md"}
    paths["json"].write_text(json.dumps(rows, indent=1))
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows([{**r, "architecture": " ".join(r["architecture"])} for r in rows])
    shown = [c for c in COLUMNS if c not in ("run", "architecture")]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in shown) + " |" for r in rows]
    paths["md"].write_text("\n".join(lines) + "\n")
    groups = {
        "s1": [r for r in rows if r["model"].startswith("S1") or r["model"] in ("FBNet1", "FBNet2")],
        "s2": [r for r in rows if r["model"].startswith("S2") or r["model"] == "FBNet3"],
    }
    groups["other"] = [r for r in rows if r not in groups["s1"] and r not in groups["s2"]]
    titles = {"s1": "method 1 (S1) and FBNet1/2 (Figure 6)", "s2": "method 2 (S2) and FBNet3 (Figure 7)",
              "other": "other runs"}  # fmt: skip
    for key, group in groups.items():
        if group:
            archs = {f"{r['model']} ({r['params_m']:.2f} M)": r["architecture"] for r in group}
            paths[f"figure_{key}"] = plot_chosen_blocks(archs, out / f"chosen_blocks_{key}.png", titles[key])
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="root of the run directories")
    parser.add_argument("--out", type=Path, default=Path("runs/fbnet_report"), help="where the table and figures go")
    parser.add_argument("--argmax", action="store_true", help="report architecture.txt (argmax) instead of the sample")
    args = parser.parse_args(argv)
    rows = collect(args.runs, "architecture.txt" if args.argmax else "architecture_sampled.txt")
    if not rows:
        raise SystemExit(f"no finished FBNet search (a */*/export.json) under {args.runs}")
    paths = write_report(rows, args.out)
    print(paths["md"].read_text())
    print("written:", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
