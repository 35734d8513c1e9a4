"""Images per second of each training pipeline, per number of DataLoader worker processes.

    python benchmarks/data_throughput.py --dataset imagenet --root /data/imagenet --workers 0 1 2 4
    python benchmarks/data_throughput.py --dataset voc            # no --root: a fixture in a temp dir

Measures the training DataLoader of the DataModule (decode + augmentation + collate), the same code
path as training, after an untimed pass and one warm-up batch per worker count (start-up excluded). Prints a table and writes JSON.
Without ``--root`` it writes the tiny fixture of ``datamodules.fixtures`` to a temporary folder: that
measures the pipeline's overhead on small images, not a real dataset's decode cost.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from datamodules.cifar10 import CIFAR10
from datamodules.fixtures import write_cifar10, write_imagenet, write_voc
from datamodules.imagenet_subset import ImageNetSubset
from datamodules.voc import VOC


def build(dataset: str, root: str, workers: int, batch_size: int, image_size: int | None, fixture: bool, mode: str):
    common = dict(batch_size=batch_size, num_workers=workers, pin_memory=False, persistent_workers=False)
    if dataset == "imagenet":
        class_list = str(Path(root) / "class_list.txt") if fixture else "imagenet10"
        return ImageNetSubset(root, class_list=class_list, image_size=image_size or 224, mode=mode, **common)
    if dataset == "cifar10":
        return CIFAR10(root, image_size=image_size or 32, verify_checksums=not fixture, **common)
    return VOC(root, image_size=image_size or 300, **common)


def measure(datamodule, batches: int) -> tuple[float, int]:
    """(images per second, images timed) over ``batches`` training batches after a warm-up batch."""
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    images, start, timed = 0, 0.0, 0
    while timed < batches:
        for index, batch in enumerate(loader):
            count = len(batch[0])
            if index == 0 and start == 0.0:
                start = time.perf_counter()  # after the first batch: workers are up
                continue
            images += count
            timed += 1
            if timed >= batches:
                break
    return images / (time.perf_counter() - start), images


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["imagenet", "cifar10", "voc"], required=True)
    parser.add_argument("--root", help="dataset root; omitted: a fixture written to a temporary folder")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=20, help="batches timed per worker count")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=None, help="default: 224 / 32 / 300")
    parser.add_argument("--mode", choices=["classify", "patches"], default="classify", help="imagenet only")
    parser.add_argument("--json", default=None, help="output file (default: data_throughput_<dataset>.json)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root, fixture = args.root, args.root is None
        if fixture:
            writer = {"imagenet": write_imagenet, "cifar10": write_cifar10, "voc": write_voc}[args.dataset]
            root = str(writer(Path(tmp) / args.dataset))
        # untimed pass: first-use costs (imports, codec and OpenCV initialisation, page cache) go here
        measure(build(args.dataset, root, 0, args.batch_size, args.image_size, fixture, args.mode), 2)
        rows = []
        for workers in args.workers:
            dm = build(args.dataset, root, workers, args.batch_size, args.image_size, fixture, args.mode)
            rate, images = measure(dm, args.batches)
            rows.append(
                {"workers": workers, "images_per_s": rate, "images_per_s_per_worker": rate / max(workers, 1),
                 "images_timed": images}
            )  # fmt: skip

    table = Table(title=f"{args.dataset} training pipeline ({'fixture' if fixture else root}), {os.cpu_count()} CPUs")
    for column in ("workers", "images/s", "images/s per worker process", "images timed"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["workers"]),
            f"{row['images_per_s']:.1f}",
            f"{row['images_per_s_per_worker']:.1f}",
            str(row["images_timed"]),
        )
    Console().print(table)
    result = {"dataset": args.dataset, "root": None if fixture else root, "fixture": fixture,
              "batch_size": args.batch_size, "image_size": args.image_size, "cpus": os.cpu_count(), "rows": rows}  # fmt: skip
    out = Path(args.json or f"data_throughput_{args.dataset}.json")
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
