"""The feature codec swept over layouts, codecs and qualities (Hiraga et al., Tables 6–9 as one table).

For each trunk (VGG16 → 512×14×14, MobileNetV2 → 32×28×28 at 224×224), layout (``r_channel``: the
paper's, mosaic in R with G = B = 0; ``mono``: the same mosaic as 4:0:0; ``square``: a near-square 4:0:0
mosaic), codec (PNG; HEVC at a constant QP sent like the paper's BPG — slice data, no container —
and, for comparison, the same HEVC in a HEIF container; WebP and AVIF at a quality) and setting: bytes
per image (the whole feature stream: header, min/max, image payload), their % of the network input as
a baseline JPEG at q = 70 (the paper's "圧縮率" basis: the 224×224 input; the quality reproduces its
Table 3, ``benchmarks/input_jpeg_basis.py``), encode and
decode ms per image, and the feature PSNR (10·log10(range² / MSE) of the decoded tensor, per image,
averaged). Then, at the feature PSNR the paper's layout reaches with HEVC qp35, the bytes every other
layout/codec needs (interpolated on its curve, log-bytes linear in PSNR; "≤ b" where even the curve's
lowest setting is better). The ``r_channel`` image is also coded at 4:4:4 (HEVC, AVIF): in 4:2:0 the R
plane reaches the codec as luma 0.299·R plus subsampled chroma, which caps its fidelity.

Images: the network input of the scikit-image photos (:mod:`datamodules.sample_images`; shorter side
to 256, centre crop 224). The edge runs with ``--weights`` (torchvision ImageNet weights: the paper's
setting) or, when none are given or available, **randomly initialised** — then the numbers compare
layouts and codecs on features of the right shapes and of real images, but not the statistics of a
trained network; the output says which. Given ``--checkpoint`` (a ``SharedTrunkTask`` run) and its data
(``--data-root``), the task's top-1/top-5 or mAP through each setting of that trunk is measured too,
with the checkpoint's own bytes per image and "圧縮率" on that data (``task_*`` columns), plus a row
for the float tensor without a codec: the paper's Table 4 (float), Table 5 (PNG = min–max only, being
lossless; with Table 3's PNG bytes) and Tables 6–9 (HEVC / WebP rows) of one checkpoint.

    python benchmarks/feature_codec_sweep.py --out results/feature_codec_sweep
    python benchmarks/feature_codec_sweep.py --weights IMAGENET1K_V1 --trunks vgg16 --codecs hevc webp
    python benchmarks/feature_codec_sweep.py --trunks vgg16 --weights IMAGENET1K_V1 \\
        --checkpoint runs/shared_trunk_vgg16_cls/RUN/checkpoints/last.ckpt --data-root data/imagenet

Writes ``feature_codec_sweep.{json,csv,png}`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from coding.feature_codec import FeatureCodec, decode, feature_psnr  # noqa: E402
from coding.feature_tiling import LAYOUTS  # noqa: E402
from coding.image_codecs import available_codecs, encode_image  # noqa: E402
from datamodules.classification_transforms import eval_transform  # noqa: E402
from datamodules.sample_images import SAMPLE_PHOTOS, load_sample_photo  # noqa: E402
from lightning_modules.shared_trunk import INPUT_JPEG_QUALITY  # noqa: E402
from models.split_backbones import TRUNKS, split_classifier  # noqa: E402
from plotting.plots import plt  # noqa: E402  (headless matplotlib)

HEVC_QPS = (10, 20, 30, 35, 40, 50)  # the paper's Tables 6 and 8
QUALITIES = (10, 30, 50, 70, 80, 90)  # the paper's WebP Tables 7 and 9 use 10 … 90
REFERENCE = {"codec": "hevc", "quality": 35, "layout": "r_channel", "chroma": "420"}
"""The paper's setting whose feature PSNR the equal-fidelity table is taken at."""


def settings(
    codecs: list[str],
    layouts: list[str],
    qps: list[int],
    qualities: list[int],
    bits: int,
    chromas: tuple[str, ...] = ("420",),
) -> list[FeatureCodec]:
    """Every valid codec setting of the sweep (10-bit only where a codec takes it; 4:4:4 only for the
    ``r_channel`` image with HEVC or AVIF)."""
    out = []
    for layout in layouts:
        for chroma in chromas:
            for codec in codecs:
                knobs: list[int | None] = (
                    [None] if codec == "png" else list(qps if codec in ("hevc", "heif") else qualities)
                )
                for quality in knobs:
                    try:
                        out.append(FeatureCodec(codec, quality, layout, bits, chroma=chroma))
                    except ValueError:
                        continue
    return out


def curve_of(row: dict) -> str:
    """The curve a row belongs to: codec and layout (and 4:4:4 when not 4:2:0)."""
    return f"{row['codec']} / {row['layout']}" + (" 4:4:4" if row.get("chroma") == "444" else "")


def network_inputs(photos: list[str], image_size: int) -> torch.Tensor:
    """(N, 3, S, S) in [0, 1]: each photo through the evaluation transform (resize, centre crop)."""
    transform = eval_transform(image_size)
    return torch.stack([transform(image=load_sample_photo(name))["image"] for name in photos])


def measure(codec: FeatureCodec, features: torch.Tensor) -> dict[str, float]:
    """Bytes, encode/decode ms and feature PSNR of ``codec`` over a batch of feature tensors (means)."""
    sizes, enc_ms, dec_ms, psnrs = [], [], [], []
    for one in features:
        start = time.perf_counter()
        data = codec.encode(one)
        middle = time.perf_counter()
        decoded = decode(data)
        end = time.perf_counter()
        sizes.append(len(data))
        enc_ms.append((middle - start) * 1e3)
        dec_ms.append((end - middle) * 1e3)
        psnrs.append(feature_psnr(decoded, one))
    finite = [p for p in psnrs if math.isfinite(p)]
    return {
        "bytes_per_image": statistics.mean(sizes),
        "encode_ms": statistics.median(enc_ms),
        "decode_ms": statistics.median(dec_ms),
        "feature_psnr": statistics.mean(finite) if len(finite) == len(psnrs) else math.inf,
    }


def task_metrics(checkpoint: str, codec: FeatureCodec | None, args: argparse.Namespace) -> dict[str, float]:
    """Validation metrics of a ``SharedTrunkTask`` checkpoint with ``codec`` on its wire (``None``: the float
    tensor): top-1/top-5 or mAP (%), and the checkpoint's own bytes per image and "圧縮率" on that data."""
    import lightning as L

    from datamodules.imagenet_subset import ImageNetSubset
    from datamodules.voc import VOC
    from lightning_modules.shared_trunk import SharedTrunkTask

    module = SharedTrunkTask.load_from_checkpoint(checkpoint, map_location="cpu", weights=None)
    module.codec = codec
    if module.is_detection:
        data = VOC(args.data_root, image_size=module.hparams.image_size, batch_size=args.batch_size,
                   num_workers=args.num_workers)  # fmt: skip
    else:
        data = ImageNetSubset(args.data_root, class_list=args.class_list, image_size=args.image_size,
                              batch_size=args.batch_size, num_workers=args.num_workers)  # fmt: skip
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=args.limit_batches)  # fmt: skip
    result = trainer.validate(module, datamodule=data, verbose=False)[0]
    keys = ("val/map50",) if module.is_detection else ("val/acc_top1", "val/acc_top5")
    out = {k.removeprefix("val/"): 100 * float(result[k]) for k in keys}
    out["task_bytes_per_image"] = float(result["val/bytes_per_image"])
    out["task_input_percent"] = float(result["val/feature_bytes_ratio"])
    return out


def bytes_at_psnr(rows: list[dict], target: float) -> float | None:
    """Bytes one curve (rows of one trunk/layout/codec) needs for ``target`` dB: log-bytes interpolated
    linearly between the two settings around it; ``None`` if the target is outside the curve's range."""
    points = sorted((r["feature_psnr"], r["bytes_per_image"]) for r in rows if math.isfinite(r["feature_psnr"]))
    for (p0, b0), (p1, b1) in zip(points, points[1:], strict=False):
        if p0 <= target <= p1 and p1 > p0:
            t = (target - p0) / (p1 - p0)
            return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
    exact = [b for p, b in points if p == target]
    return exact[0] if exact else None


def equal_fidelity(rows: list[dict]) -> list[dict]:
    """Per trunk: the feature PSNR of the reference (r_channel, HEVC qp35) and each curve's bytes there."""
    out = []
    for trunk in dict.fromkeys(r["trunk"] for r in rows):
        mine = [r for r in rows if r["trunk"] == trunk]
        ref = [r for r in mine if all(r[k] == v for k, v in REFERENCE.items())]
        if not ref:
            continue
        target, ref_bytes = ref[0]["feature_psnr"], ref[0]["bytes_per_image"]
        for name in dict.fromkeys(curve_of(r) for r in mine if r["codec"] not in ("png", "float32")):
            curve = [r for r in mine if curve_of(r) == name]
            need = bytes_at_psnr(curve, target)
            bound = False
            lowest = min(curve, key=lambda r: r["feature_psnr"])
            if need is None and lowest["feature_psnr"] > target:  # even its lowest setting is better: ≤ its bytes
                need, bound = lowest["bytes_per_image"], True
            out.append({"trunk": trunk, "curve": name, "feature_psnr": target, "bytes_per_image": need,
                        "at_most": bound, "vs_reference": None if need is None else need / ref_bytes,
                        "input_percent": None if need is None else 100 * need / ref[0]["input_jpeg_bytes"]})  # fmt: skip
    return out


def run(args: argparse.Namespace, console: Console) -> dict:
    codecs = [c for c in args.codecs if ("hevc" if c == "heif" else c) in available_codecs()]
    skipped = sorted(set(args.codecs) - set(codecs))
    if skipped:
        console.print(f"[yellow]codecs not in this build, skipped: {skipped}")
    inputs = network_inputs(args.photos, args.image_size)
    jpeg = [len(encode_image(image, "jpeg", INPUT_JPEG_QUALITY)) for image in inputs]
    grid = settings(codecs, args.layouts, args.qps, args.qualities, args.bits, tuple(args.chromas))
    rows: list[dict] = []
    weights_note = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:  # fmt: skip
        for trunk in args.trunks:
            torch.manual_seed(args.seed)  # a randomly initialised trunk is the same one on every run
            try:
                model = split_classifier(trunk, 1000, args.weights, args.width).eval()
                weights_note[trunk] = args.weights or "random initialisation (no --weights)"
            except Exception as error:  # noqa: BLE001 — no network / no cached weights: say so, go on
                model = split_classifier(trunk, 1000, None, args.width).eval()
                weights_note[trunk] = f"random initialisation ({args.weights} unavailable: {error})"
            with torch.no_grad():
                features = model.encode(inputs)
            task = progress.add_task(f"{trunk} {tuple(features.shape[1:])}", total=len(grid))
            if args.checkpoint and trunk == args.checkpoint_trunk:  # Table 4: the float tensor, no codec
                raw = 4 * features[0].numel()
                rows.append({"trunk": trunk, "layout": "—", "codec": "float32", "quality": None, "bits": 32,
                             "chroma": "—", "setting": "float32", "bytes_per_image": raw, "encode_ms": 0.0,
                             "decode_ms": 0.0, "feature_psnr": math.inf, "input_jpeg_bytes": statistics.mean(jpeg),
                             "input_percent": 100 * raw / statistics.mean(jpeg),
                             **task_metrics(args.checkpoint, None, args)})  # fmt: skip
            for codec in grid:
                row = {"trunk": trunk, "layout": codec.layout, "codec": codec.codec, "quality": codec.quality,
                       "bits": codec.bits, "chroma": codec.chroma, "setting": codec.name,
                       **measure(codec, features)}  # fmt: skip
                row["input_jpeg_bytes"] = statistics.mean(jpeg)
                row["input_percent"] = 100 * row["bytes_per_image"] / row["input_jpeg_bytes"]
                if args.checkpoint and trunk == args.checkpoint_trunk:
                    row.update(task_metrics(args.checkpoint, codec, args))
                rows.append(row)
                progress.advance(task)
    return {
        "images": list(args.photos),
        "image_size": args.image_size,
        "input_jpeg_quality": INPUT_JPEG_QUALITY,
        "weights": weights_note,
        "seed": args.seed,
        "rows": rows,
        "equal_fidelity": equal_fidelity(rows),
    }


def print_tables(results: dict, console: Console) -> None:
    console.print(f"Images: {len(results['images'])} scikit-image photos at {results['image_size']}², "
                  f"basis: input JPEG q={results['input_jpeg_quality']}. Trunk weights: {results['weights']}")  # fmt: skip
    extra = [k for k in ("acc_top1", "acc_top5", "map50", "task_bytes_per_image", "task_input_percent")
             if any(k in r for r in results["rows"])]  # fmt: skip
    table = Table(title="feature codec sweep")
    for column in ("trunk", "codec / layout", "q/qp", "bytes", "% input", "enc ms", "dec ms", "feat. PSNR", *extra):
        table.add_column(column, justify="left" if column in ("trunk", "codec / layout") else "right")
    for r in results["rows"]:
        table.add_row(r["trunk"], curve_of(r), "—" if r["quality"] is None else str(r["quality"]),
                      f"{r['bytes_per_image']:.0f}", f"{r['input_percent']:.2f}", f"{r['encode_ms']:.1f}",
                      f"{r['decode_ms']:.1f}", f"{r['feature_psnr']:.2f}",
                      *(f"{r[k]:.2f}" if k in r else "" for k in extra))  # fmt: skip
    console.print(table)
    same = Table(title="bytes at the feature PSNR of the paper's layout with HEVC qp35")
    for column in ("trunk", "codec / layout", "feat. PSNR", "bytes", "× r_channel/hevc", "% input"):
        same.add_column(column, justify="left" if column in ("trunk", "codec / layout") else "right")
    for r in results["equal_fidelity"]:
        need = r["bytes_per_image"]
        same.add_row(r["trunk"], r["curve"], f"{r['feature_psnr']:.2f}",
                     "not reached" if need is None else ("≤ " if r["at_most"] else "") + f"{need:.0f}",
                     "" if need is None else f"{r['vs_reference']:.2f}",
                     "" if need is None else f"{r['input_percent']:.2f}")  # fmt: skip
    console.print(same)


CODEC_COLOURS = {"hevc": "C0", "webp": "C1", "avif": "C2", "heif": "C4"}
LAYOUT_LINES = {"r_channel": "-", "mono": "--", "square": ":"}


def plot(results: dict, path: Path) -> Path:
    """Feature PSNR (and the task metric, when measured) against % of the input JPEG, per trunk."""
    trunks = list(dict.fromkeys(r["trunk"] for r in results["rows"]))
    metric = next((k for k in ("acc_top1", "map50") if any(k in r for r in results["rows"])), None)
    rows_of_panels = 2 if metric else 1
    fig, axes = plt.subplots(
        rows_of_panels, len(trunks), figsize=(6 * len(trunks), 4.5 * rows_of_panels), squeeze=False
    )
    for col, trunk in enumerate(trunks):
        mine = [r for r in results["rows"] if r["trunk"] == trunk and r["codec"] not in ("png", "float32")]
        for name in dict.fromkeys(curve_of(r) for r in mine):
            curve = sorted((r for r in mine if curve_of(r) == name), key=lambda r: r["input_percent"])
            first = curve[0]  # colour = codec, line = layout (dash-dot: r_channel at 4:4:4)
            style = {
                "color": CODEC_COLOURS.get(first["codec"], "C3"),
                "linestyle": "-." if first.get("chroma") == "444" else LAYOUT_LINES[first["layout"]],
                "marker": "s" if first.get("chroma") == "444" else "o",
            }
            for row, key in enumerate(["feature_psnr"] + ([metric] if metric else [])):
                points = [r for r in curve if key in r and math.isfinite(r[key])]
                axes[row][col].plot([r["input_percent"] for r in points], [r[key] for r in points], label=name,
                                    **style)  # fmt: skip
        for row, label in enumerate(["feature PSNR [dB]"] + ([metric] if metric else [])):
            ax = axes[row][col]
            ax.set_xscale("log")
            ax.set_xlabel(f"bytes, % of the input JPEG (q={results['input_jpeg_quality']})")
            ax.set_ylabel(label)
            ax.set_title(f"{trunk} ({results['weights'].get(trunk, '')[:40]})", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trunks", nargs="+", choices=TRUNKS, default=list(TRUNKS))
    p.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    p.add_argument(
        "--codecs",
        nargs="+",
        choices=["png", "hevc", "heif", "webp", "avif"],
        default=["png", "hevc", "heif", "webp", "avif"],
    )
    p.add_argument("--qps", nargs="+", type=int, default=list(HEVC_QPS), help="HEVC constant QPs")
    p.add_argument("--qualities", nargs="+", type=int, default=list(QUALITIES), help="WebP / AVIF qualities")
    p.add_argument(
        "--chromas",
        nargs="+",
        choices=["420", "444"],
        default=["420", "444"],
        help="chroma of the r_channel image (4:4:4 only with hevc/avif)",
    )
    p.add_argument("--bits", type=int, default=8, choices=[8, 10], help="min–max bits (10: png/hevc grey layouts)")
    p.add_argument("--photos", nargs="+", choices=SAMPLE_PHOTOS, default=list(SAMPLE_PHOTOS))
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--weights", default=None, help="torchvision weights of the trunks, e.g. IMAGENET1K_V1")
    p.add_argument("--seed", type=int, default=0, help="seed of a randomly initialised trunk")
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier (< 1 only without weights)")
    p.add_argument("--checkpoint", default=None, help="a SharedTrunkTask checkpoint: measure its task metric too")
    p.add_argument("--checkpoint-trunk", default="vgg16", choices=TRUNKS, help="the trunk of --checkpoint")
    p.add_argument("--data-root", default=None, help="the checkpoint's dataset root (ImageNet or VOC)")
    p.add_argument("--class-list", default="imagenet10", help="ImageNet class list of the checkpoint")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--limit-batches", type=float, default=1.0, help="fraction or number of validation batches")
    p.add_argument("--out", type=Path, default=Path("results/feature_codec_sweep"))
    args = p.parse_args(argv)
    if args.checkpoint and not args.data_root:
        p.error("--checkpoint needs --data-root")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    console = Console(width=170)
    results = run(args, console)
    print_tables(results, console)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "feature_codec_sweep.json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    with (args.out / "feature_codec_sweep.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in results["rows"] for k in r)))
        writer.writeheader()
        writer.writerows(results["rows"])
    plot(results, args.out / "feature_codec_sweep.png")
    console.print(f"wrote {args.out}/feature_codec_sweep.{{json,csv,png}}")
    return results


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
