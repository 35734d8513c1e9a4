"""Table 1 of Shibata, Ohara, Yamauchi ("画像の圧縮復元認識フレームワークの軽量化と高速化"), side by side.

The four pipelines — conventional (compressor → decoder → ResNet-18) and the decoder-removed
``from_layer2`` / ``from_layer3`` / ``from_layer4`` (the paper's 提案手法 (layer1) / (layer2) / (layer3)) —
are built at one compressor width and iteration count and timed *in one run*, interleaved round by
round (batch 1, warm-up, median; :mod:`models.latency`), so the time ratios to the conventional
pipeline are measured under the same load. MACs (edge + server, :mod:`models.mac_count`) are counted
beside the times: where time follows MACs, the encoder's share of the conventional MACs bounds every
decoder-removed ratio from below. Parameters are those of the deployed pipeline (edge:
encoder + binarizer; server: decoder + ResNet-18, or adapter + cut ResNet-18). Accuracy is measured
when ``--checkpoints`` and ``--data-root`` are given.

    python benchmarks/code_recognition_table.py                       # width 0.465, k = 1, 224×224, CPU
    python benchmarks/code_recognition_table.py --iterations 1 4 16 --repeats 50 --out results.json
    python benchmarks/code_recognition_table.py --checkpoints from_layer2=runs/.../last.ckpt \\
        --data-root data/imagenet --class-list imagenet100

The paper's times are per image on its (unstated) hardware; compare ratios, not milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torchmetrics.classification import MulticlassAccuracy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.table_output import print_table as print_plain_table  # noqa: E402
from benchmarks.table_output import write_table  # noqa: E402
from models.code_classifier import PAPER_NAMES, VARIANTS, CodeRecognitionNet  # noqa: E402
from models.latency import measure_side_by_side  # noqa: E402

PAPER = {
    "conventional": {"ms": 42.8, "params": 20_293_224, "acc_top1": 64.94},
    "from_layer2": {"ms": 23.8, "params": 14_867_364, "acc_top1": 66.40},
    "from_layer3": {"ms": 11.4, "params": 14_581_796, "acc_top1": 65.14},
    "from_layer4": {"ms": 9.0, "params": 13_404_452, "acc_top1": 54.16},
}
"""Table 1 of the paper (ImageNet-100, ResNet-18, per image)."""


def paper_ratio(variant: str) -> float:
    return PAPER[variant]["ms"] / PAPER["conventional"]["ms"]


def parse_checkpoints(items: list[str]) -> dict[str, str]:
    """``["from_layer2=path", ...]`` → ``{"from_layer2": "path"}``, with the variant names checked."""
    out = {}
    for item in items:
        variant, sep, path = item.partition("=")
        if not sep or variant not in VARIANTS:
            raise SystemExit(f"--checkpoints takes VARIANT=PATH with VARIANT in {', '.join(VARIANTS)}; got {item!r}")
        if not Path(path).is_file():
            raise SystemExit(f"checkpoint not found: {path}")
        out[variant] = path
    return out


def load_checkpoint(path: str):
    """A trained ``CodeRecognition`` (its compressor initialisation is not re-read)."""
    from lightning_modules.code_recognition import CodeRecognition

    return CodeRecognition.load_from_checkpoint(path, map_location="cpu", init_compressor_from=None)


def build_models(args: argparse.Namespace, iterations: int, trained: dict) -> dict[str, CodeRecognitionNet]:
    models = {}
    for variant in VARIANTS:
        if variant in trained:
            models[variant] = trained[variant].model
        else:
            models[variant] = CodeRecognitionNet(
                variant,
                num_classes=args.num_classes,
                iterations=iterations,
                codec_cell=args.cell,
                codec_width=args.width,
                bits=args.bits,
            )
    return models


@torch.inference_mode()
def accuracy(model: CodeRecognitionNet, loader, num_classes: int, device: torch.device, progress: Progress) -> dict:
    model.eval().to(device)
    """Plain (micro-averaged) top-1 / top-5 accuracy in % over every image of ``loader``."""
    top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro").to(device)
    top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro").to(device)
    task = progress.add_task(f"accuracy {model.variant}", total=len(loader))
    for images, labels in loader:
        logits = model(images.to(device))
        top1.update(logits, labels.to(device))
        top5.update(logits, labels.to(device))
        progress.advance(task)
    return {"acc_top1": 100 * float(top1.compute()), "acc_top5": 100 * float(top5.compute())}


def run(args: argparse.Namespace, console: Console) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    trained = {v: load_checkpoint(p) for v, p in parse_checkpoints(args.checkpoints).items()}
    loader = None
    if trained and args.data_root:
        from datamodules.imagenet_subset import ImageNetSubset

        data = ImageNetSubset(
            args.data_root,
            class_list=args.class_list,
            image_size=args.image_size,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            pin_memory=device.type == "cuda",
        )
        loader = data.val_dataloader()
    results = {
        "settings": {
            "width": args.width,
            "cell": args.cell,
            "bits": args.bits,
            "image_size": args.image_size,
            "num_classes": args.num_classes,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "checkpoints": args.checkpoints,
        },
        "paper": PAPER,
        "rows": [],
    }
    example = torch.rand(1, 3, args.image_size, args.image_size, device=device)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        for k in args.iterations:
            models = {v: m.to(device) for v, m in build_models(args, k, trained).items()}
            task = progress.add_task(f"timing k={k} (interleaved rounds)", total=args.repeats)
            times = measure_side_by_side(
                models, example, args.warmup, args.repeats, on_round=lambda _, task=task: progress.advance(task)
            )
            medians = {v: statistics.median(t) for v, t in times.items()}
            macs = {v: m.mac_counts(example) for v, m in models.items()}
            for variant, model in models.items():
                t = sorted(times[variant])
                row = {
                    "variant": variant,
                    "paper_name": PAPER_NAMES[variant],
                    "iterations": model.iterations,
                    "width": trained[variant].hparams.codec_width if variant in trained else args.width,
                    "ms_per_image": medians[variant],
                    "ms_p25": t[len(t) // 4],
                    "ms_p75": t[(3 * len(t)) // 4],
                    "ratio_to_conventional": medians[variant] / medians["conventional"],
                    "paper_ratio": paper_ratio(variant),
                    **{f"params_{k2}": v2 for k2, v2 in model.parameter_counts().items()},
                    **{f"macs_{k2}": v2 for k2, v2 in macs[variant].items()},
                    "mac_ratio_to_conventional": macs[variant]["total"] / macs["conventional"]["total"],
                    "edge_mac_share_of_conventional": macs[variant]["edge"] / macs["conventional"]["total"],
                    "paper_params": PAPER[variant]["params"],
                    "paper_acc_top1": PAPER[variant]["acc_top1"],
                }
                row["params_gap"] = row["params_total"] - row["paper_params"]
                if variant in trained and loader is not None:
                    row.update(accuracy(model, loader, args.num_classes, device, progress))
                results["rows"].append(row)
    results["settings"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return results


HEADER = (
    "variant", "paper", "k", "ms/image", "p25–p75", "ratio", "paper ratio", "≤ paper ratio", "GMACs edge+server",
    "MAC ratio", "edge params", "server params", "total params", "paper params", "Δ params", "top-1 %", "paper top-1 %",
)  # fmt: skip


def table_rows(results: dict) -> list[dict[str, str]]:
    rows = []
    for r in results["rows"]:
        ok = r["variant"] == "conventional" or r["ratio_to_conventional"] <= r["paper_ratio"]
        cells = [
            r["variant"],
            r["paper_name"],
            str(r["iterations"]),
            f"{r['ms_per_image']:.1f}",
            f"{r['ms_p25']:.1f}–{r['ms_p75']:.1f}",
            f"{r['ratio_to_conventional']:.3f}",
            f"{r['paper_ratio']:.3f}",
            "yes" if ok else "no",
            f"{r['macs_edge'] / 1e9:.2f}+{r['macs_server'] / 1e9:.2f}",
            f"{r['mac_ratio_to_conventional']:.3f}",
            f"{r['params_edge']:,}",
            f"{r['params_server']:,}",
            f"{r['params_total']:,}",
            f"{r['paper_params']:,}",
            f"{r['params_gap']:+,} ({100 * r['params_gap'] / r['paper_params']:+.2f}%)",
            f"{r['acc_top1']:.2f}" if "acc_top1" in r else "—",
            f"{r['paper_acc_top1']:.2f}",
        ]
        rows.append(dict(zip(HEADER, cells, strict=True)))
    return rows


def print_table(results: dict, console: Console) -> None:
    s = results["settings"]
    title = (
        f"Recognition on codes vs compress → decode → classify — {s['image_size']}×{s['image_size']}, batch 1, "
        f"{s['device']} ({s['torch_threads']} threads), compressor {s['cell']} width {s['width']}, "
        f"{s['bits']} bits/iteration, median of {s['repeats']} interleaved rounds"
    )
    print_plain_table(HEADER, table_rows(results), title=title, right=HEADER[2:], console=console, width=120, keys=3)
    console.print(
        f"load average (1, 5, 15 min) at start {s['load_average_at_start']}, at end {s['load_average_at_end']}; "
        "ratios are measured in one run, interleaved, so a load change hits all four alike."
    )
    for r in results["rows"]:
        if r["variant"] == "conventional":
            console.print(
                f"k={r['iterations']}: the encoder + binarizer alone is {r['edge_mac_share_of_conventional']:.3f} of "
                "the conventional pipeline's MACs — the floor of any decoder-removed ratio on hardware where time "
                "follows MACs."
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--width", type=float, default=0.465, help="compressor width multiplier (default 0.465)")
    p.add_argument("--iterations", type=int, nargs="+", default=[1], help="k values to time (default 1)")
    p.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=30, help="timed rounds (each runs every variant once)")
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--checkpoints",
        nargs="*",
        default=[],
        metavar="VARIANT=PATH",
        help="trained CodeRecognition checkpoints (they keep their own width and k)",
    )
    p.add_argument("--data-root", default=None, help="ImageNet root for accuracy (ILSVRC layout)")
    p.add_argument("--class-list", default="imagenet100")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    console = Console()
    results = run(args, console)
    print_table(results, console)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
        written = write_table(HEADER, table_rows(results), args.out.with_suffix(""), right=HEADER[2:])
        console.print(f"wrote {args.out}, {written[0]} and {written[1]}")
    return results


if __name__ == "__main__":
    main()
