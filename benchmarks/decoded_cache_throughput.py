"""Images/s of the training data pipeline of recognition on decoded images: from the decoded-image cache, and
decoding every image on the fly (``decoded_cache_dir: null``), side by side in one run.

    python -m benchmarks.decoded_cache_throughput --checkpoint runs/rnn_compressor_demo/demo/checkpoints/last.ckpt \\
        --width 0.125 --iterations 2 [--root data/fixtures/imagenet] [--image-size 64] [--workers 0 2]

Each measurement reads every training image once through the ``ImageNetSubset`` training pipeline (decode or
cache read, random-resized crop, flip), in a DataLoader with the given worker processes, after the cache has been
built (building is not timed). Without ``--root`` the ImageNet fixture is written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from datamodules.decoded_cache import DecodingLoader
from datamodules.fixtures import write_imagenet
from datamodules.imagenet_subset import ImageNetSubset
from lightning_modules.compressed_image_recognition import CompressedImageRecognition


def images_per_second(dataset, workers: int, batch_size: int = 8) -> float:
    """Images/s of one pass over ``dataset`` in a DataLoader with ``workers`` processes."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    count = sum(len(batch[0]) for batch in loader)
    return count / (time.perf_counter() - start)


def measure(
    checkpoint: str, root: str, width: float, iterations: int, image_size: int, workers: list[int], cache_dir: str
) -> list[dict]:
    """Rows ``{"source", "workers", "images_per_s"}`` for the cache and for decoding on the fly."""
    model = CompressedImageRecognition(
        codec_width=width, iterations=iterations, arch="resnet18", decoded_cache_dir=cache_dir, cache_workers=0
    )
    model.load_compressor(checkpoint)
    data = ImageNetSubset(
        root, class_list=f"{root}/class_list.txt", image_size=image_size, num_workers=0, pin_memory=False
    )
    data.setup("fit")
    dataset = data.train_set
    (cache, channel), *_ = model.caches()
    cache.build(dataset.source_paths(), channel, description="building the cache (not timed)")
    loaders = {"cache": cache.loader(), "on the fly": DecodingLoader(tuple(model.channels(cpu_copy=True)))}
    rows = []
    for n in workers:
        for source, loader in loaders.items():
            dataset.image_loader = loader
            rows.append({"source": source, "workers": n, "images_per_s": images_per_second(dataset, n)})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.decoded_cache_throughput", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", required=True, help="RNNCompressor checkpoint")
    parser.add_argument("--width", type=float, default=0.125, help="the compressor's width")
    parser.add_argument("--iterations", type=int, default=2, help="k")
    parser.add_argument("--root", help="ImageNet-layout root with class_list.txt (default: a temporary fixture)")
    parser.add_argument("--image-size", type=int, default=64, help="training crop side")
    parser.add_argument("--workers", type=int, nargs="+", default=[0], help="DataLoader worker counts to measure")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of this process")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or str(write_imagenet(Path(scratch) / "imagenet"))
        rows = measure(
            args.checkpoint, root, args.width, args.iterations, args.image_size, args.workers, f"{scratch}/cache"
        )
    table = Table(title=f"training pipeline, k = {args.iterations}, {args.image_size} px crops")
    for column in ("images from", "workers", "images/s"):
        table.add_column(column, justify="left" if column == "images from" else "right")
    for row in rows:
        table.add_row(row["source"], str(row["workers"]), f"{row['images_per_s']:.1f}")
    Console().print(table)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
