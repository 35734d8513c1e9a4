"""Scan a dataset for unreadable images and malformed annotations before a long run.

    python -m datamodules.check ROOT --dataset imagenet          # every image under ROOT, fully decoded
    python -m datamodules.check ROOT --dataset voc               # VOCdevkit/VOC*/: XML, images, index files
    python -m datamodules.check ROOT --dataset cifar10           # cifar-10-batches-py/ pickles
    python -m datamodules.check --decoded-cache DIR                # a decoded-image cache (recognition on decoded
                                                                   # images): every entry verified [--delete-bad]
    ... [--workers N] [--output problems.txt]

Every file is read with the same code the DataModules use (``load_rgb``, ``read_annotation``), in worker
processes, with a progress bar. Each problem is printed as ``path: what is wrong``; the exit status is 1
when there is any. ``--output`` writes the problem paths, one per line. Training stops at the first
unreadable image with an error naming it; ``ImageNetSubset(skip_unreadable=True)`` leaves such images out
instead (logged and counted).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from datamodules.cifar10 import CIFAR10_FILES
from datamodules.image_io import list_images, load_rgb
from datamodules.voc import read_annotation

DATASETS = ("imagenet", "voc", "cifar10")
CIFAR10_IMAGE_BYTES = 32 * 32 * 3


@dataclass(frozen=True)
class Problem:
    """A file that a DataModule could not use, and why."""

    path: str
    error: str

    def __str__(self) -> str:
        return f"{self.path}: {self.error}"


def check_image(path: str) -> str | None:
    """``None`` when the image decodes completely, else the error."""
    try:
        load_rgb(path)
    except OSError as err:
        return str(err.__cause__ or err)
    return None


def check_voc_annotation(path: str) -> str | None:
    """``None`` when the VOC XML parses into boxes and labels, else the error."""
    try:
        read_annotation(path)
    except ValueError as err:
        return str(err).removeprefix(f"{path}: ")
    return None


def check_cifar_batch(path: str) -> str | None:
    """``None`` when a CIFAR-10 batch file unpickles to uint8 (N, 3072) data and labels in 0..9, else the error."""
    try:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        data, labels = np.asarray(batch["data"]), np.asarray(batch.get("labels", batch.get("fine_labels")))
    except Exception as err:  # a damaged pickle can raise almost anything
        return f"not a CIFAR-10 batch: {type(err).__name__}: {err}"
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR10_IMAGE_BYTES:
        return f"data is {data.dtype} {data.shape}, expected uint8 (N, {CIFAR10_IMAGE_BYTES})"
    if labels.shape != (data.shape[0],) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        return f"{labels.shape[0] if labels.ndim else 0} labels for {data.shape[0]} images, or labels outside 0..9"
    return None


CHECKS = {"image": check_image, "voc-xml": check_voc_annotation, "cifar-batch": check_cifar_batch}


def _run(task: tuple[str, str]) -> Problem | None:
    kind, path = task
    error = CHECKS[kind](path)
    return None if error is None else Problem(path, error)


def voc_tasks(root: Path) -> tuple[list[tuple[str, str]], list[Problem]]:
    """Checks of every VOC year under ``root/VOCdevkit``, and the index entries whose files are missing."""
    years = sorted(p for p in (root / "VOCdevkit").glob("VOC*") if p.is_dir())
    if not years:
        raise FileNotFoundError(f"{root}/VOCdevkit/VOC<year> not found: extract the VOC tars into {root}")
    tasks: list[tuple[str, str]] = []
    missing: list[Problem] = []
    for year in years:
        tasks += [("voc-xml", str(p)) for p in sorted((year / "Annotations").glob("*.xml"))]
        tasks += [("image", str(p)) for p in list_images(year / "JPEGImages")]
        for index in sorted((year / "ImageSets" / "Main").glob("*.txt")):
            if "_" in index.stem:  # per-class lists (aeroplane_train.txt) repeat the same ids
                continue
            for image_id in index.read_text().split():
                for needed in (year / "Annotations" / f"{image_id}.xml", year / "JPEGImages" / f"{image_id}.jpg"):
                    if not needed.is_file():
                        missing.append(Problem(str(needed), f"missing (listed in {index})"))
    return tasks, missing


def tasks_for(root: Path, dataset: str) -> tuple[list[tuple[str, str]], list[Problem]]:
    """The (kind, path) checks of ``dataset`` under ``root``, and problems found while listing them."""
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    if dataset == "imagenet":
        images = list_images(root)
        if not images:
            raise FileNotFoundError(f"no image files under {root}")
        return [("image", str(p)) for p in images], []
    if dataset == "voc":
        return voc_tasks(root)
    if dataset == "cifar10":
        folder = root / "cifar-10-batches-py"
        missing = [
            Problem(str(folder / n), "missing") for n in [*CIFAR10_FILES, "batches.meta"] if not (folder / n).is_file()
        ]
        return [("cifar-batch", str(folder / n)) for n in CIFAR10_FILES if (folder / n).is_file()], missing
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not show,
    )


def scan(
    root: str | Path, dataset: str, workers: int | None = None, progress: bool = True
) -> tuple[int, list[Problem]]:
    """Check every file of ``dataset`` under ``root``; the number of files checked and the problems found.

    Args:
        workers: worker processes (``None``: one per CPU; ``0``: in this process).
        progress: show a progress bar.
    """
    tasks, problems = tasks_for(Path(root).expanduser(), dataset)
    if workers is None:
        workers = os.cpu_count() or 1
    chunk = max(1, min(256, len(tasks) // (4 * max(workers, 1)) or 1))
    with _progress(progress) as bar, ProcessPoolExecutor(workers) if workers > 0 else _InProcess() as pool:
        task = bar.add_task(f"checking {dataset}", total=len(tasks))
        for result in pool.map(_run, tasks, chunksize=chunk):
            bar.advance(task)
            if result is not None:
                problems.append(result)
    return len(tasks), problems


class _InProcess:
    """``Executor.map`` in this process (``workers=0``)."""

    def map(self, fn, items: Iterable, chunksize: int = 1):
        return map(fn, items)

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc) -> None:
        return None


def check_decoded_cache(path: Path, delete_bad: bool = False, output: Path | None = None) -> int:
    """``--decoded-cache``: verify every entry of the cache(s) at ``path``; print each problem; 1 if any."""
    from datamodules.decoded_cache import cache_directories, check_directory, remove_entry

    try:
        directories = cache_directories(path)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    checked, problems = 0, []
    for directory in directories:
        count, found = check_directory(directory, progress=sys.stderr.isatty())
        checked += count
        problems += [Problem(p.path, p.error) for p in found]
    for problem in problems:
        print(problem)
        if delete_bad:
            remove_entry(problem.path)
    if output is not None:
        output.write_text("".join(f"{p.path}\n" for p in problems))
    deleted = " (bad entries deleted: the next run decodes them again)" if delete_bad and problems else ""
    print(f"checked {checked} entries in {len(directories)} cache(s) under {path}: {len(problems)} problem(s){deleted}",
          file=sys.stderr)  # fmt: skip
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datamodules.check",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("root", type=Path, nargs="?", help="dataset root, as given to the DataModule's root")
    parser.add_argument("--dataset", choices=DATASETS, help="which on-disk format to check")
    parser.add_argument(
        "--decoded-cache",
        type=Path,
        metavar="DIR",
        help="check a decoded-image cache instead (decoded_cache_dir, or one <channel>-<key> folder in it)",
    )
    parser.add_argument("--delete-bad", action="store_true", help="with --decoded-cache: delete the bad entries")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes (0: none)")
    parser.add_argument("--output", type=Path, default=None, help="also write the problem paths here, one per line")
    args = parser.parse_args(argv)
    if args.decoded_cache is not None:
        return check_decoded_cache(args.decoded_cache, args.delete_bad, args.output)
    if args.root is None or args.dataset is None:
        parser.error("give a dataset ROOT and --dataset, or --decoded-cache DIR")
    try:
        checked, problems = scan(args.root, args.dataset, args.workers, progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    for problem in problems:
        print(problem)
    if args.output is not None:
        args.output.write_text("".join(f"{p.path}\n" for p in problems))
    print(f"checked {checked} files under {args.root}: {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
