"""Gather finished FBNet searches, their children and the baselines into the paper's Tables 2/3 and
Figures 6–7.

    python benchmarks/fbnet_report.py --runs runs --out runs/fbnet_report

A **search** run is a directory with ``export.json`` (written by ``FBNetSearch`` at the end of fit). A
**child** or **baseline** run is an ``FBNetChild`` run directory; its test metrics are read, whatever
the logger, from (first found): ``results/test.json`` (written by every test), the CSV logs
(``csv/**/metrics.csv``), the W&B run summaries (``wandb/*/files/wandb-summary.json``, offline runs
included). A child belongs to the search whose run directory holds its architecture file (the path
in its results record); without a record, ``<runs>/<name>_child/<id>`` or ``<runs>/<name with
search → child>/<id>`` (``fbnet_demo_search`` → ``fbnet_demo_child``) is taken.

Columns, per the paper's tables (their "推論速度" is the time to classify the 10,000 CIFAR-10 test
images, their energy the joules for the same):

- ``acc_pct``: the child's test top-1;
- ``measured_s_10k``: the child's measured forward time over the test set scaled to 10,000 images
  (``forward_s · 10000 / images``; the paper's column when the test set is CIFAR-10's 10,000);
- ``batch1_s_10k``: batch-1 ms per image × 10 (seconds for 10,000 images one at a time);
- ``table_s_10k``: the search's table latency (ms per image) × 10 (FBNet runs only);
- ``energy_j_10k``: the table energy (mJ per image) × 10 for FBNet runs; for the baselines the
  documented MAC + bytes proxy (``energy_source`` says which);
- ``params_m``; the paper's row where there is one.

The architecture reported for a search is its export (``architecture.txt``: argmax by default);
``--architecture sampled`` reports ``architecture_sampled.txt`` (best of N samples, ours), ``argmax``
``architecture_argmax.txt``. Writes ``table.md``, ``table.csv``, ``table.json`` and
``chosen_blocks_s1.png`` / ``chosen_blocks_s2.png`` (one row per model, one cell per layer coloured by
block, skips white; S1 runs beside FBNet1/2 and MobileNetV2, S2 runs beside FBNet3 and MobileNetV2,
as in Figures 6 and 7; runs of other names go into ``chosen_blocks_other.png``).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

from models.fbnet import FBNetChildNet, read_architecture
from models.fbnet_baselines import PAPER_BASELINES, mobilenet_v2_blocks
from plotting.fbnet_plots import plot_chosen_blocks

# the paper's Tables 2 and 3: accuracy %, seconds for 10,000 images (i7-6950X), joules (RPi 3B table), parameters M
PAPER = {
    **{label: row for label, *row in PAPER_BASELINES.values()},
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
COLUMNS = ["model", "run", "child", "loss", "goal", "acc_pct", "measured_s_10k", "batch1_s_10k", "table_s_10k",
           "energy_j_10k", "energy_source", "params_m", "metrics_source", "paper_acc_pct", "paper_s_10k",
           "paper_j_10k", "paper_params_m", "architecture"]  # fmt: skip
ARCHITECTURE_FILES = {"export": "architecture.txt", "argmax": "architecture_argmax.txt",
                      "sampled": "architecture_sampled.txt"}  # fmt: skip
TEST_IMAGES = 10_000  # CIFAR-10's test set: the paper's time and energy are for all of it


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


def _last_csv_metrics(csv_path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            out.update({k: float(v) for k, v in row.items() if k and k.startswith("test/") and v not in ("", None)})
    return out


def read_test_metrics(run_dir: Path) -> tuple[dict[str, float], str | None, dict | None]:
    """(test metrics, where they came from, the results record) of one child/baseline run directory."""
    record_path = run_dir / "results" / "test.json"
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{record_path}: not a results record ({err})") from None
        return dict(record.get("metrics", {})), str(record_path), record
    for csv_path in sorted(run_dir.glob("csv/**/metrics.csv")):
        if metrics := _last_csv_metrics(csv_path):
            return metrics, str(csv_path), None
    for summary in sorted(run_dir.glob("wandb/*/files/wandb-summary.json")):
        data = json.loads(summary.read_text())
        if metrics := {k: float(v) for k, v in data.items() if k.startswith("test/") and isinstance(v, int | float)}:
            return metrics, str(summary), None
    return {}, None, None


def _child_records(runs: Path) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(runs.glob("**/results/test.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if record.get("method") == "fbnet_child":
            out.append((path.parent.parent, record))
    return out


def _cost_columns(metrics: dict[str, float]) -> dict[str, float | None]:
    measured = None
    if metrics.get("test/images"):
        measured = metrics["test/forward_s"] * TEST_IMAGES / metrics["test/images"]
    batch1 = metrics["test/ms_per_image"] * TEST_IMAGES / 1000 if "test/ms_per_image" in metrics else None
    return {"measured_s_10k": measured, "batch1_s_10k": batch1}


def _paper(label: str) -> dict:
    p = PAPER.get(label, (None,) * 4)
    return {"paper_acc_pct": p[0], "paper_s_10k": p[1], "paper_j_10k": p[2], "paper_params_m": p[3]}


def collect(runs: Path, architecture: str = "export") -> list[dict]:
    """One row per finished search and per baseline run under ``runs`` (see the module docstring)."""
    records = _child_records(runs)
    by_search = {Path(r["architecture"]).parent: d for d, r in records if r.get("architecture")}
    rows = []
    for export in sorted(runs.glob("*/*/export.json")):
        run_dir = export.parent
        summary = json.loads(export.read_text())
        arch_file = run_dir / ARCHITECTURE_FILES[architecture]
        if not arch_file.is_file() and architecture == "export":  # a search of before architecture_argmax.txt
            arch_file = run_dir / "architecture.txt"
        space, arch = read_architecture(arch_file)
        chosen_key = {"export": summary.get("exported", "argmax"), "argmax": "argmax", "sampled": "best_sampled"}
        chosen = summary[chosen_key[architecture]]
        name = run_dir.parent.name
        child = by_search.get(run_dir.resolve())
        if child is None:
            for candidate in (
                runs / f"{name}_child" / run_dir.name,
                runs / name.replace("search", "child") / run_dir.name,
            ):
                if candidate != run_dir and candidate.is_dir():
                    child = candidate
                    break
        metrics, source, _ = read_test_metrics(child) if child is not None else ({}, None, None)
        params = metrics.get("test/params", sum(p.numel() for p in FBNetChildNet(space, arch).parameters()))
        label = paper_label(name)
        rows.append({
            "model": label, "run": str(run_dir), "child": str(child) if child else None, "loss": summary["loss"],
            "goal": summary["goal"],
            "acc_pct": 100 * metrics["test/acc_top1"] if "test/acc_top1" in metrics else None,
            **_cost_columns(metrics), "table_s_10k": chosen["latency_ms"] * TEST_IMAGES / 1000,
            "energy_j_10k": chosen["energy_mj"] * TEST_IMAGES / 1000, "energy_source": "search cost table",
            "params_m": params / 1e6, "metrics_source": source, **_paper(label), "architecture": arch,
        })  # fmt: skip
    for run_dir, record in records:
        if not record.get("baseline"):
            continue
        metrics = record["metrics"]
        label = PAPER_BASELINES.get(record["baseline"], (record["baseline"],))[0]
        if record.get("baseline_width", 1.0) != 1.0:
            label += f" ×{record['baseline_width']:g}"
        energy = metrics.get("test/proxy_energy_mj")
        rows.append({
            "model": label, "run": str(run_dir), "child": str(run_dir), "loss": "ce", "goal": None,
            "acc_pct": 100 * metrics["test/acc_top1"] if "test/acc_top1" in metrics else None,
            **_cost_columns(metrics), "table_s_10k": None,
            "energy_j_10k": energy * TEST_IMAGES / 1000 if energy is not None else None,
            "energy_source": "MAC + bytes proxy", "params_m": metrics.get("test/params", 0.0) / 1e6,
            "metrics_source": str(run_dir / "results" / "test.json"), **_paper(label), "architecture": [],
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
    shown = [c for c in COLUMNS if c not in ("run", "child", "metrics_source", "architecture")]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in shown) + " |" for r in rows]
    paths["md"].write_text("\n".join(lines) + "\n")
    searches = [r for r in rows if r["architecture"]]
    groups = {
        "s1": [r for r in searches if r["model"].startswith("S1") or r["model"] in ("FBNet1", "FBNet2")],
        "s2": [r for r in searches if r["model"].startswith("S2") or r["model"] == "FBNet3"],
    }
    groups["other"] = [r for r in searches if r not in groups["s1"] and r not in groups["s2"]]
    titles = {"s1": "method 1 (S1), FBNet1/2 and MobileNetV2 (Figure 6)",
              "s2": "method 2 (S2), FBNet3 and MobileNetV2 (Figure 7)", "other": "other runs"}  # fmt: skip
    for key, group in groups.items():
        if group:
            archs = {f"{r['model']} ({r['params_m']:.2f} M)": r["architecture"] for r in group}
            if key != "other":  # the paper draws MobileNetV2 (17 blocks, in FBNet's block names) above them
                archs = {"MobileNetV2 (17 blocks, 2.24 M)": mobilenet_v2_blocks(), **archs}
            paths[f"figure_{key}"] = plot_chosen_blocks(archs, out / f"chosen_blocks_{key}.png", titles[key])
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="root of the run directories")
    parser.add_argument("--out", type=Path, default=Path("runs/fbnet_report"), help="where the table and figures go")
    parser.add_argument("--architecture", choices=list(ARCHITECTURE_FILES), default="export",
                        help="which architecture of a search to report: its export (default), argmax or the "
                             "best of N samples (ours)")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        raise SystemExit(f"--runs {args.runs}: no such directory")
    rows = collect(args.runs, args.architecture)
    if not rows:
        raise SystemExit(f"no finished FBNet search (a */*/export.json) or baseline test under {args.runs}")
    paths = write_report(rows, args.out)
    print(paths["md"].read_text())
    print("written:", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
