"""Table 1 of Takase et al. (平均画像容量の比較): mean size of the source images of a split and of their compressed
streams at k iterations.

    python -m benchmarks.decoded_image_sizes --voc data/voc --split 2007-trainval --checkpoint CKPT      # 5,011 images
    python -m benchmarks.decoded_image_sizes --imagenet data/imagenet --class-list imagenet10 --split val \\
        --val-per-class 50 --checkpoint CKPT                                                           # 500 images
    python -m benchmarks.decoded_image_sizes --images DIR --checkpoint CKPT [--iterations 1 2 3] [--coding packed]

Source bytes are the files as stored (the paper's 元画像 row). Stream bytes are ``len(compress(codec, x, k))``: the
recurrent codec's real bitstream of each whole image at its own resolution, its 28-byte header included (the
paper's 圧縮画像 row, k = 1). ``--checkpoint`` is an ``RNNCompressor`` or ``CompressedImageRecognition`` checkpoint.
Bit-packed (the paper's reading: k · 32 bits per 16×16 block), a stream's size depends only on the image's height
and width — 28 + ⌈k · bits · ⌈H/16⌉ · ⌈W/16⌉ / 8⌉ bytes, e.g. 3,028 bytes for a 469×387 image at k = 1 — so
``--from-sizes`` (no checkpoint) reads only the image headers and computes that, without running any codec; an
entropy-coded stream (``--coding entropy|smallest``) needs the codec.

Prints the table (Markdown when the output is not a terminal) and writes ``--out``/decoded_image_sizes.{md,csv,json}
(the JSON also holds every image's sizes). kB are 1,000 bytes.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from rich.progress import track

from benchmarks.compressor_checkpoint import load_codec
from benchmarks.table_output import print_table, write_table
from coding.bitpacking import packed_size
from coding.image_codecs import to_float_chw
from coding.rnn_bitstream import CODINGS, compress, first_iterations, header_size
from datamodules.decoded_cache import source_record
from datamodules.image_io import list_images, load_rgb
from datamodules.voc import parse_split
from models.rnn_codec import STRIDE, RNNCodec

COLUMNS = ["split", "images", "k", "coding", "source kB", "compressed kB", "stream bytes", "reduction %", "bpp"]


def voc_images(root: str | Path, split: str) -> list[Path]:
    """The JPEGs of a VOC image set (``2007-trainval``: ``VOCdevkit/VOC2007/ImageSets/Main/trainval.txt``)."""
    year, image_set = parse_split(split)
    folder = Path(root).expanduser() / "VOCdevkit" / f"VOC{year}"
    index = folder / "ImageSets" / "Main" / f"{image_set}.txt"
    if not index.is_file():
        raise FileNotFoundError(
            f"{index} not found: give the folder holding VOCdevkit/VOC{year} (the VOC tars extracted)"
        )
    paths = [folder / "JPEGImages" / f"{image_id}.jpg" for image_id in index.read_text().split()]
    if missing := [p for p in paths if not p.is_file()]:
        raise FileNotFoundError(f"{len(missing)} image(s) listed in {index} are missing, e.g. {missing[0]}")
    return paths


def imagenet_images(root: str, class_list: str, split: str, per_class: int | None, layout: str) -> list[Path]:
    """The source files of an ``ImageNetSubset`` split (``val``: its evaluation images; ``train``)."""
    from datamodules.imagenet_subset import ImageNetSubset

    data = ImageNetSubset(
        root, class_list=class_list, layout=layout, val_per_class=per_class if split == "val" else None,
        train_per_class=per_class if split == "train" else None, num_workers=0, pin_memory=False,
    )  # fmt: skip
    data.setup("fit")
    return (data.val_set if split == "val" else data.train_set).source_paths()


def packed_stream_bytes(height: int, width: int, k: int, bits: int = 32) -> int:
    """Bytes of a bit-packed stream of one H×W image at k iterations: header + ⌈k · bits · ⌈H/16⌉ · ⌈W/16⌉ / 8⌉."""
    return header_size() + packed_size(k * bits * math.ceil(height / STRIDE) * math.ceil(width / STRIDE))


def stream_bytes(codec: RNNCodec, path: Path, iterations: list[int], coding: str) -> dict[int, int]:
    """``len`` of the real stream of the image at ``path`` for every k (progressive prefixes of one stream,
    except for ``smallest``, where each k is coded on its own)."""
    x = to_float_chw(load_rgb(path)).unsqueeze(0).to(next(codec.parameters()).device)
    if coding == "smallest":
        return {k: len(compress(codec, x, k, coding=coding)) for k in iterations}
    stream = compress(codec, x, max(iterations), coding=coding)
    return {k: len(first_iterations(stream, k)) for k in iterations}


def measure(
    paths: list[Path], iterations: list[int], codec: RNNCodec | None, coding: str = "packed", bits: int = 32
) -> list[dict]:
    """Per image: ``{"path", "height", "width", "source_bytes", "stream_bytes": {k: bytes}}``."""
    rows = []
    for path in track(paths, description="measuring stream bytes"):
        record = source_record(path)  # header only; names the file if unreadable
        if codec is None:
            sizes = {k: packed_stream_bytes(record.height, record.width, k, bits) for k in iterations}
        else:
            with torch.no_grad():
                sizes = stream_bytes(codec, path, iterations, coding)
        rows.append({"path": str(path), "height": record.height, "width": record.width,
                     "source_bytes": record.source_bytes, "stream_bytes": sizes})  # fmt: skip
    return rows


def summarise(images: list[dict], split: str, coding: str) -> list[dict]:
    """One row per k: mean source and stream kB, reduction 1 − Σ stream / Σ source, bpp 8 Σ stream / Σ pixels."""
    source = sum(r["source_bytes"] for r in images)
    pixels = sum(r["height"] * r["width"] for r in images)
    rows = []
    for k in images[0]["stream_bytes"]:
        sent = sum(r["stream_bytes"][k] for r in images)
        rows.append({
            "split": split, "images": len(images), "k": k, "coding": coding,
            "source_bytes_per_image": source / len(images), "stream_bytes_per_image": sent / len(images),
            "source kB": f"{source / len(images) / 1e3:.2f}", "compressed kB": f"{sent / len(images) / 1e3:.2f}", "stream bytes": f"{sent / len(images):.1f}",
            "reduction %": f"{100 * (1 - sent / source):.1f}", "bpp": f"{8 * sent / pixels:.4f}",
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.decoded_image_sizes", description=__doc__.split("\n")[0]
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--voc", metavar="ROOT", help="folder holding VOCdevkit/ (with --split YEAR-SET)")
    where.add_argument("--imagenet", metavar="ROOT", help="ImageNet root of an ImageNetSubset (with --class-list)")
    where.add_argument("--images", metavar="DIR", help="every image file under DIR")
    parser.add_argument("--split", help="VOC: YEAR-SET (default 2007-trainval); ImageNet: val (default) or train")
    parser.add_argument("--class-list", default="imagenet10", help="ImageNet: class list name or file")
    parser.add_argument("--layout", default="ilsvrc", choices=["ilsvrc", "folders"], help="ImageNet layout")
    parser.add_argument("--val-per-class", type=int, help="ImageNet: images per class of the split (paper: 50)")
    parser.add_argument("--checkpoint", help="RNNCompressor or CompressedImageRecognition checkpoint of the codec")
    parser.add_argument("--from-sizes", action="store_true", help="no codec: bit-packed sizes from the image headers")
    parser.add_argument("--bits", type=int, default=32, help="--from-sizes: code bits per 16×16 block and iteration")
    parser.add_argument("--iterations", type=int, nargs="+", default=[1], help="k (paper's Table 1: 1)")
    parser.add_argument("--coding", choices=CODINGS, default="packed", help="payload coding of the streams")
    parser.add_argument("--device", default="cpu", help="device of the codec (cpu, cuda)")
    parser.add_argument("--out", default="runs/decoded_image_sizes", help="folder for the .md, .csv and .json")
    args = parser.parse_args(argv)
    if bool(args.checkpoint) == args.from_sizes:
        parser.error("give --checkpoint (real streams) or --from-sizes (bit-packed sizes, no codec), not both")
    if args.from_sizes and args.coding != "packed":
        parser.error("--from-sizes computes bit-packed streams only; entropy-coded sizes need --checkpoint")
    if any(k < 1 for k in args.iterations):
        parser.error(f"iterations must be >= 1, got {args.iterations}")
    try:
        codec = load_codec(args.checkpoint).to(args.device) if args.checkpoint else None
        if args.voc:
            split = args.split or "2007-trainval"
            paths = voc_images(args.voc, split)
        elif args.imagenet:
            split = args.split or "val"
            if split not in ("val", "train"):
                parser.error(f"--split for ImageNet is val or train, got {split!r}")
            paths = imagenet_images(args.imagenet, args.class_list, split, args.val_per_class, args.layout)
        else:
            split = str(args.images)
            paths = list_images(args.images)
            if not paths:
                raise FileNotFoundError(f"no image files under {args.images}")
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    iterations = sorted(set(args.iterations))
    images = measure(paths, iterations, codec, args.coding, args.bits)
    coding = args.coding + (" (from sizes)" if codec is None else "")
    rows = summarise(images, split, coding)
    out = Path(args.out)
    title = "Table 1: mean image size before and after compression"
    md, csv_path = write_table(COLUMNS, rows, out / "decoded_image_sizes", title, right=COLUMNS[1:2] + COLUMNS[4:])
    (out / "decoded_image_sizes.json").write_text(json.dumps({"rows": rows, "images": images}, indent=1))
    print_table(COLUMNS, rows, title, right=COLUMNS[1:2] + COLUMNS[4:])
    print(f"wrote {md}, {csv_path} and {out / 'decoded_image_sizes.json'}")
    return rows


if __name__ == "__main__":
    main()
