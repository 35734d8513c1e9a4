"""Figure 3 of Takase et al. (各繰り返し回数の復元画像とデータサイズ): images and their reconstructions at k = 1..3,
each with the size of its real stream.

    python -m benchmarks.reconstruction_figure --checkpoint CKPT IMAGE [IMAGE ...] [--iterations 1 2 3] \\
        [--coding packed] [--out runs/reconstruction_figure]

Each image is coded whole, at its own resolution, into one stream of max(k) iterations; the stream of its first
k iterations (:func:`coding.rnn_bitstream.first_iterations`, progressive) is decoded and drawn, titled with its
length in bytes (28-byte header included) and bits per pixel; the original is titled with its file's size. With
``--coding smallest`` each k is coded on its own (the smaller payload may differ between k). ``--checkpoint``:
an ``RNNCompressor`` or ``CompressedImageRecognition`` checkpoint. Writes ``reconstructions.png`` and
``reconstruction_bytes.{md,csv}``, and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.compressor_checkpoint import load_codec
from benchmarks.table_output import print_table, write_table
from coding.image_codecs import to_float_chw
from coding.rnn_bitstream import CODINGS, compress, decompress, first_iterations
from datamodules.image_io import load_rgb
from models.rnn_codec import RNNCodec
from plotting.reconstruction_figure import save_reconstruction_figure


@torch.no_grad()
def reconstruct(codec: RNNCodec, path: Path, iterations: list[int], coding: str) -> tuple[torch.Tensor, dict]:
    """The image at ``path`` in [0, 1], and k → (decoded image, stream bytes) for every k."""
    x = to_float_chw(load_rgb(path)).unsqueeze(0).to(next(codec.parameters()).device)
    if coding == "smallest":
        streams = {k: compress(codec, x, k, coding=coding) for k in iterations}
    else:
        whole = compress(codec, x, max(iterations), coding=coding)
        streams = {k: first_iterations(whole, k) for k in iterations}
    return x[0].cpu(), {k: (decompress(codec, s)[0].float().cpu(), len(s)) for k, s in streams.items()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reconstruction_figure", description=__doc__.split("\n")[0]
    )
    parser.add_argument("images", nargs="+", type=Path, help="image files (one row each)")
    parser.add_argument("--checkpoint", required=True, help="RNNCompressor or CompressedImageRecognition checkpoint")
    parser.add_argument("--iterations", type=int, nargs="+", default=[1, 2, 3], help="k shown (paper: 1 2 3)")
    parser.add_argument("--coding", choices=CODINGS, default="packed", help="payload coding of the streams")
    parser.add_argument("--device", default="cpu", help="device of the codec")
    parser.add_argument("--out", type=Path, default=Path("runs/reconstruction_figure"), help="output folder")
    args = parser.parse_args(argv)
    if missing := [str(p) for p in args.images if not p.is_file()]:
        parser.error(f"no such image file: {', '.join(missing)}")
    if any(k < 1 for k in args.iterations):
        parser.error(f"iterations must be >= 1, got {args.iterations}")
    try:
        codec = load_codec(args.checkpoint).to(args.device)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    ks = sorted(set(args.iterations))
    originals, decoded, sizes, rows = [], {k: [] for k in ks}, {k: [] for k in ks}, []
    for path in args.images:
        x, out = reconstruct(codec, path, ks, args.coding)
        originals.append(x)
        row = {"image": str(path), "size": f"{x.shape[-1]}×{x.shape[-2]}", "source bytes": path.stat().st_size}
        for k in ks:
            decoded[k].append(out[k][0])
            sizes[k].append(out[k][1])
            row[f"k={k} bytes"] = out[k][1]
        rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    png = save_reconstruction_figure(
        originals, decoded, sizes, args.out / "reconstructions.png", [p.stat().st_size for p in args.images],
        title=f"reconstructions and their stream bytes ({args.coding}; {Path(args.checkpoint).name})",
    )  # fmt: skip
    columns = ["image", "size", "source bytes", *(f"k={k} bytes" for k in ks)]
    title = "Figure 3: stream bytes of each image at k iterations"
    md, csv_path = write_table(columns, rows, args.out / "reconstruction_bytes", title, right=columns[2:])
    print_table(columns, rows, title, right=columns[2:])
    print(f"wrote {png}, {md} and {csv_path}")
    return rows


if __name__ == "__main__":
    main()
