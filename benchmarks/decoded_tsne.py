"""Figure 5 of Takase et al. (t-SNE による特徴空間の可視化): the recogniser's features of the evaluation images,
original and decoded, embedded in two dimensions by t-SNE, one row per checkpoint.

    python -m benchmarks.decoded_tsne runs/cir_conventional/checkpoints/last.ckpt \\
        runs/cir_compressed_k2/checkpoints/last.ckpt --out runs/decoded_tsne
    ... [--root DIR --class-list FILE --image-size N] [--cache-dir DIR] [--perplexity 30] [--seed 0]

Any ``CompressedImageRecognition`` classification checkpoint, whatever its regime: its ResNet's features (the
input of its ``fc`` layer, after global pooling) are computed on the original evaluation images and on the same
images decoded through the checkpoint's own channel (its frozen compressor at its k, or its classical codec),
with the DataModule's evaluation transforms. Both sets are embedded together by one t-SNE per checkpoint
(``sklearn.manifold.TSNE``, PCA initialisation, ``--seed``), so the two panels of a row share axes: the left
shows the original images, the right the decoded ones, coloured by class.

The paper reads its Figure 5 as "classes stay compact, but some (cat: fine fur texture) spread out on decoded
images". Besides the picture, the spread is measured where t-SNE cannot distort it, in the feature space: per
class, the mean Euclidean distance of its images' features to their class mean, on original and on decoded
images, and the ratio decoded / original (> 1: the class spreads out when decoded). Decoded images can shrink or
grow every feature at once, so the table also gives the ratio of *relative* spreads, each class's spread divided
by the spread of all images of its set around their common mean (> 1: the class spreads out more than the set as
a whole does).

The evaluation images are the checkpoint's DataModule's (``datamodule_hyper_parameters`` in the checkpoint, as
LightningCLI saves it) unless ``--root`` is given. Writes ``tsne.png``, ``tsne_spread.{md,csv}`` and
``tsne_features.npz`` (features, embedding, labels, and which images were decoded) to ``--out``.
"""

from __future__ import annotations

import argparse
import inspect
import pathlib
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from rich.progress import track
from torch.utils.data import DataLoader

from benchmarks.table_output import print_table, write_table
from datamodules.decoded_datasets import DecodedDatasets
from datamodules.image_io import load_rgb
from datamodules.imagenet_subset import ImageNetSubset
from lightning_modules.compressed_image_recognition import CompressedImageRecognition

SAFE_GLOBALS = [pathlib.PosixPath, pathlib.WindowsPath]
"""Paths in hyper-parameters (a DataModule's root given as a Path) are allowed when loading with ``weights_only``."""
COLUMNS = ["checkpoint", "regime", "class", "images", "spread original", "spread decoded", "decoded / original",
           "relative decoded / original"]  # fmt: skip


def load_model(path: str | Path) -> CompressedImageRecognition:
    """A classification checkpoint of ``CompressedImageRecognition`` (compressor and recogniser), in eval mode."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        model = CompressedImageRecognition.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    if model.hparams.task != "classification":
        raise ValueError(
            f"{path}: a {model.hparams.task} checkpoint; t-SNE of classifier features needs classification"
        )
    return model.eval()


def datamodule_for(path: str | Path, args: argparse.Namespace) -> ImageNetSubset:
    """The evaluation data: ``--root`` (and ``--class-list``, ``--image-size``), else the checkpoint's DataModule."""
    if args.root:
        settings: dict[str, Any] = {"root": args.root, "class_list": args.class_list or f"{args.root}/class_list.txt"}
        if args.image_size:
            settings["image_size"] = args.image_size
    else:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        settings = dict(checkpoint.get("datamodule_hyper_parameters", {}))
        if not settings:
            raise ValueError(f"{path} records no DataModule (not saved by LightningCLI): give --root and --class-list")
        class_path = settings.get("_class_path", "datamodules.imagenet_subset.ImageNetSubset")
        if not class_path.endswith("ImageNetSubset"):
            raise ValueError(f"{path} was trained on {class_path}; the t-SNE benchmark reads an ImageNetSubset")
        accepted = inspect.signature(ImageNetSubset).parameters
        settings = {k: v for k, v in settings.items() if k in accepted}  # LightningCLI adds _class_path etc.
    settings.update(num_workers=0, pin_memory=False, persistent_workers=False)
    data = ImageNetSubset(**settings)
    data.setup("validate")
    return data


@torch.no_grad()
def features(model: CompressedImageRecognition, dataset: Any, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D): the input of the classifier's ``fc`` layer, labels (N,)) of every item of ``dataset``."""
    captured: list[torch.Tensor] = []
    fc = model.recogniser[1].fc
    hook = fc.register_forward_pre_hook(lambda _module, inputs: captured.append(inputs[0].detach().flatten(1)))
    labels = []
    try:
        for images, targets in track(DataLoader(dataset, batch_size=batch_size), description="features"):
            model(images)
            labels.append(targets)
    finally:
        hook.remove()
    return torch.cat(captured).numpy(), torch.cat(labels).numpy()


def spread(feats: np.ndarray, labels: np.ndarray, label: int) -> float:
    """Mean Euclidean distance of class ``label``'s features to their mean."""
    own = feats[labels == label]
    return float(np.linalg.norm(own - own.mean(axis=0), axis=1).mean())


def embed(feats: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """2-D t-SNE of ``feats`` (perplexity capped below a third of the points, as t-SNE needs)."""
    from sklearn.manifold import TSNE

    n = len(feats)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 images, got {n}")
    return TSNE(2, perplexity=min(perplexity, (n - 1) / 3), init="pca", random_state=seed).fit_transform(feats)


def run(path: str | Path, args: argparse.Namespace) -> dict[str, Any]:
    """Features of one checkpoint on original and decoded evaluation images, their embedding and spread rows."""
    model = load_model(path)
    data = datamodule_for(path, args)
    dataset = data.val_set
    dataset.image_loader = load_rgb
    original, labels = features(model, dataset)
    hp = model.hparams
    cache_dir = args.cache_dir if args.cache_dir is not None else hp.decoded_cache_dir
    decoded_data = DecodedDatasets({"train": "original", "eval": "compressed"}, hp.iterations, hp.stream_coding,
                                   model.classical, cache_dir or None, 0)  # fmt: skip
    decoded_data.prepare(data, "validate", model.compressor)
    decoded, decoded_labels = features(model, dataset)
    assert (decoded_labels == labels).all()
    embedding = embed(np.concatenate([original, decoded]), args.perplexity, args.seed)
    whole_original, whole_decoded = (spread(f, np.zeros(len(f)), 0) for f in (original, decoded))
    rows = []
    for label in sorted(set(labels.tolist())):
        so, sd = spread(original, labels, label), spread(decoded, labels, label)
        relative = (sd / whole_decoded) / (so / whole_original) if so > 0 and whole_decoded > 0 else float("nan")
        rows.append({"checkpoint": str(path), "regime": model.regime, "class": data.class_names[label],
                     "images": int((labels == label).sum()), "spread original": f"{so:.4f}",
                     "spread decoded": f"{sd:.4f}", "decoded / original": f"{sd / so:.3f}" if so > 0 else "",
                     "relative decoded / original": f"{relative:.3f}"})  # fmt: skip
    setting = (
        f"{hp.channel} k={hp.iterations}" if model.classical is None else f"{hp.channel} matched to k={hp.iterations}"
    )
    return {"path": str(path), "regime": model.regime, "paper": model.paper_regime, "setting": setting,
            "original": original, "decoded": decoded, "labels": labels, "embedding": embedding,
            "class_names": data.class_names, "rows": rows, "bytes": decoded_data.rates["val"]["bytes_per_image"]}  # fmt: skip


def plot(results: list[dict[str, Any]], path: Path) -> Path:
    """One row per checkpoint: the t-SNE embedding of the original images (left) and of the decoded ones (right)."""
    figure, axes = plt.subplots(
        len(results), 2, figsize=(10, 4.6 * len(results)), squeeze=False, sharex="row", sharey="row"
    )
    colours = plt.get_cmap("tab10" if len(results[0]["class_names"]) <= 10 else "tab20")
    for row, result in zip(axes, results, strict=True):
        n = len(result["labels"])
        panels = ((row[0], result["embedding"][:n], "original images"),
                  (row[1], result["embedding"][n:], f"decoded images ({result['bytes']:.0f} B/image)"))  # fmt: skip
        for axis, points, name in panels:
            for label, class_name in enumerate(result["class_names"]):
                mine = result["labels"] == label
                if mine.any():
                    axis.scatter(*points[mine].T, s=12, color=colours(label % colours.N), label=class_name)
            axis.set_title(name, fontsize=8)
            axis.set_xticks([])
            axis.set_yticks([])
        # the paper's regime names are in the table: the plot's font may have no CJK glyphs
        where = Path(result["path"])
        run = where.parent.parent.name if where.parent.name == "checkpoints" else where.name  # the run's id
        row[0].set_ylabel(f"{result['regime']}\n{result['setting']}\nrun {run}", fontsize=8)
        row[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.suptitle("t-SNE of the recogniser's features (Figure 5)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decoded_tsne", description=__doc__.split("\n")[0])
    parser.add_argument(
        "checkpoints", nargs="+", type=Path, help="CompressedImageRecognition classification checkpoints"
    )
    parser.add_argument("--root", help="ImageNet root of the evaluation images (default: the checkpoint's DataModule)")
    parser.add_argument("--class-list", help="with --root: class list (default: ROOT/class_list.txt)")
    parser.add_argument("--image-size", type=int, help="with --root: evaluation image size")
    parser.add_argument(
        "--cache-dir", help="decoded-image cache folder (default: the checkpoint's; '' decodes on the fly)"
    )
    parser.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (capped at (N - 1) / 3)")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE random state")
    parser.add_argument("--out", type=Path, default=Path("runs/decoded_tsne"), help="output folder")
    args = parser.parse_args(argv)
    if missing := [str(p) for p in args.checkpoints if not p.is_file()]:
        parser.error(f"no such checkpoint: {', '.join(missing)}")
    try:
        results = [run(path, args) for path in args.checkpoints]
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    args.out.mkdir(parents=True, exist_ok=True)
    png = plot(results, args.out / "tsne.png")
    rows = [row for result in results for row in result["rows"]]
    title = "Per-class spread of the recogniser's features (mean distance to the class mean)"
    md, csv_path = write_table(COLUMNS, rows, args.out / "tsne_spread", title, right=COLUMNS[3:])
    np.savez(args.out / "tsne_features.npz", **{f"{key}_{i}": result[key] for i, result in enumerate(results)
                                                 for key in ("original", "decoded", "labels", "embedding")})  # fmt: skip
    print_table(COLUMNS, rows, title, right=COLUMNS[3:])
    print(f"wrote {png}, {md}, {csv_path} and {args.out / 'tsne_features.npz'}")
    return results


if __name__ == "__main__":
    main()
