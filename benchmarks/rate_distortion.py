"""Rate–distortion of a trained recurrent compressor beside JPEG and WebP at the nearest bpp.

    python -m benchmarks.rate_distortion --checkpoint runs/rnn_compressor_demo/demo/checkpoints/last.ckpt

Codes the held-out photos (by default those the demo validates on) at iterations 1..T with the real
bitstream (the smaller of its bit-packed and entropy-coded payloads, both sizes shown), then, for each
iteration's bpp, each classical codec at the quality whose bpp is nearest.
Prints a table and writes ``rate_distortion.{json,csv,png}`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from coding.rate_distortion import nearest_quality_at_bpp, rnn_codec_points
from datamodules.patch_datasets import fit_for_codec
from datamodules.patch_transforms import to_unit_tensor
from datamodules.sample_images import DEFAULT_VAL_PHOTOS, load_sample_photo
from lightning_modules.rnn_compressor import RNNCompressor
from plotting.plots import plot_rate_distortion


def rate_distortion_table(
    compressor: RNNCompressor, images: list[torch.Tensor], iterations: int, codecs: list[str]
) -> list[dict]:
    """Rows for the learned codec at 1..``iterations`` and each classical codec at the nearest bpp."""
    codec = compressor.codec.eval()
    rows = rnn_codec_points(codec, images, iterations)
    for row in track(list(rows), description="classical codecs at the same bpp"):
        for name in codecs:
            nearest = nearest_quality_at_bpp(images, name, row["bpp"])
            nearest["matched_to"] = row["setting"]
            rows.append(nearest)
    return rows


def print_table(rows: list[dict], console: Console) -> None:
    table = Table(title="rate–distortion on the held-out photos (bpp from real bytes, header included)")
    columns = ("codec", "setting", "bpp", "bytes", "packed / entropy coded", "PSNR [dB]", "MS-SSIM", "matched to")
    for column in columns:
        table.add_column(column, justify="right" if column not in ("codec", "setting") else "left")
    for r in rows:
        both = f"{r['bytes_packed']:.0f} / {r['bytes_entropy']:.0f}" if "bytes_packed" in r else ""
        table.add_row(
            r["codec"], r["setting"], f"{r['bpp']:.3f}", f"{r['bytes']:.0f}", both, f"{r['psnr']:.2f}",
            f"{r['ms_ssim']:.4f}", r.get("matched_to", ""),
        )  # fmt: skip
    console.print(table)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="an RNNCompressor checkpoint")
    parser.add_argument("--iterations", type=int, default=None, help="default: the model's own T")
    parser.add_argument("--photos", nargs="+", default=list(DEFAULT_VAL_PHOTOS), help="bundled photo names")
    parser.add_argument("--max-side", type=int, default=256, help="downscale photos to at most this side")
    parser.add_argument("--codecs", nargs="+", default=["jpeg", "webp"])
    parser.add_argument(
        "--out", type=Path, default=Path("rate_distortion"), help="output folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    compressor = RNNCompressor.load_from_checkpoint(args.checkpoint, map_location="cpu", weights_only=True)
    iterations = args.iterations or compressor.iterations
    images = [to_unit_tensor(fit_for_codec(load_sample_photo(n), args.max_side)) for n in args.photos]
    with torch.inference_mode():
        rows = rate_distortion_table(compressor, images, iterations, args.codecs)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rate_distortion.json").write_text(json.dumps(rows, indent=2))
    columns = sorted({key for row in rows for key in row})
    with open(args.out / "rate_distortion.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    plot_rate_distortion(rows, args.out / "rate_distortion.png", title=f"held-out photos: {', '.join(args.photos)}")
    console = Console()
    print_table(rows, console)
    console.print(f"wrote {args.out}/rate_distortion.{{json,csv,png}}")
    return rows


if __name__ == "__main__":
    main()
