"""The decoded-dataset wrapper: points a DataModule's datasets at the images a channel delivers.

Recognition on decoded images (:mod:`lightning_modules.compressed_image_recognition`) trains and evaluates
on original or decoded images. :class:`DecodedDatasets` does the data side, for any DataModule whose datasets
read image files through ``image_loader`` and list them with ``source_paths()`` (``ImageNetSubset``,
``VOC``), inside any ``ConcatDataset`` nesting:

- ``original`` images: each dataset reads its source files with its own loader; the bytes sent are the
  source files' sizes;
- ``compressed`` images: every source file is sent once through the channel — the frozen recurrent
  compressor at k iterations (:class:`coding.image_channel.RNNChannel`), a classical codec, or a classical
  codec matched to the compressor's bytes — into a verified cache on disk
  (:class:`datamodules.decoded_cache.DecodedImageCache`), and the datasets read the decoded images from it
  (their usual transforms apply after); or, with no cache folder, each image is decoded again whenever it
  is read (:class:`datamodules.decoded_cache.DecodingLoader`).

It takes the compressor at each call (the module's frozen one, which may be loaded from a checkpoint after
construction), and returns the bytes of the evaluation images (:func:`rate_summary`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from rich.progress import track
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from coding.image_channel import ClassicalChannel, RNNChannel
from coding.rnn_bitstream import Coding
from datamodules.decoded_cache import (
    CachedImageLoader,
    DecodedImageCache,
    DecodingLoader,
    ImageRecord,
    source_record,
)
from datamodules.image_io import load_rgb

STAGE_ROLES: dict[str, tuple[str, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
}
"""The datasets (roles) each Trainer stage reads; ``test`` falls back to the validation set."""


def leaf_datasets(dataset: Dataset) -> list[Dataset]:
    """The datasets that read image files, inside any ``ConcatDataset`` nesting.

    Raises:
        TypeError: a dataset without ``source_paths()`` and ``image_loader`` (not built on image files).
    """
    if isinstance(dataset, ConcatDataset):
        return [leaf for part in dataset.datasets for leaf in leaf_datasets(part)]
    if not (hasattr(dataset, "source_paths") and hasattr(dataset, "image_loader")):
        raise TypeError(
            f"{type(dataset).__name__} does not read image files through `image_loader` / `source_paths()`; "
            "recognition on decoded images needs a DataModule of source images such as "
            "datamodules.imagenet_subset.ImageNetSubset or datamodules.voc.VOC"
        )
    return [dataset]


def rate_summary(records: list[ImageRecord]) -> dict[str, float]:
    """Mean bytes sent and source bytes per image, data reduction 1 − Σ bytes / Σ source bytes, bpp
    8 Σ bytes / Σ pixels, and the fraction of images over their byte budget."""
    if not records:
        raise ValueError("no images to measure")
    sent = sum(r.bytes for r in records)
    source = sum(r.source_bytes for r in records)
    pixels = sum(r.height * r.width for r in records)
    return {
        "bytes_per_image": sent / len(records),
        "source_bytes_per_image": source / len(records),
        "data_reduction": 1.0 - sent / source,
        "bpp": 8.0 * sent / pixels,
        "over_budget_fraction": sum(not r.fits for r in records) / len(records),
    }


def role_dataset(datamodule: Any, role: str) -> Dataset:
    """The DataModule's dataset of ``role`` (``train``, ``val``; ``test`` falls back to ``val_set``)."""
    if datamodule is None:
        raise RuntimeError("recognition on decoded images needs a DataModule (fit/validate/test with datamodule=...)")
    if role == "test":
        dataset = getattr(datamodule, "test_set", None) or getattr(datamodule, "val_set", None)
    else:
        dataset = getattr(datamodule, f"{role}_set", None)
    if dataset is None:
        raise RuntimeError(f"the DataModule has no {role} dataset after setup()")
    return dataset


class DecodedDatasets:
    """Which images each role reads, through which channel, and where the decoded ones are kept.

    Args:
        images: ``{"train": "original" | "compressed", "eval": ...}``: the images of the training role and of
            the evaluation roles (val, test, predict).
        iterations: k, the compressor's iterations sent (also the bytes a matched classical codec may spend).
        stream_coding: payload of the recurrent stream (``packed``, ``entropy``, ``smallest``).
        classical: a classical channel, or ``None`` for the recurrent codec alone.
        cache_dir: folder of the decoded-image caches; ``None`` decodes on every read.
        cache_workers: worker processes that build a cache.
    """

    def __init__(
        self,
        images: Mapping[str, str],
        iterations: int,
        stream_coding: Coding,
        classical: ClassicalChannel | None,
        cache_dir: str | None,
        cache_workers: int,
    ) -> None:
        self.images = dict(images)
        self.iterations = iterations
        self.stream_coding = stream_coding
        self.classical = classical
        self.cache_dir = cache_dir
        self.cache_workers = cache_workers
        self.prepared: dict[str, str] = {}
        """role → what it reads: ``original``, the cache folder, or ``decoded on the fly``."""
        self.rates: dict[str, dict[str, float]] = {}
        """evaluation role → :func:`rate_summary` of its images."""
        self._source_loaders: dict[int, Any] = {}

    def images_for(self, role: str) -> str:
        return self.images["train"] if role == "train" else self.images["eval"]

    @property
    def uses_compressor(self) -> bool:
        """Whether decoded images depend on the compressor (rnn, or a classical codec matched to its bytes)."""
        return self.classical is None or self.classical.needs_budget

    def compresses(self, stage: str) -> bool:
        """Whether any role of ``stage`` reads decoded images."""
        return any(self.images_for(role) == "compressed" for role in STAGE_ROLES[stage])

    def channels(self, compressor: nn.Module, cpu_copy: bool = False) -> list[Any]:
        """The channels an image goes through, in order: the recurrent codec; a classical codec (after the
        recurrent one when it is matched to its bytes). ``cpu_copy``: the codec copied to the CPU (workers)."""
        codec = copy.deepcopy(compressor).cpu() if cpu_copy else compressor
        rnn = RNNChannel(codec, self.iterations, self.stream_coding)
        if self.classical is None:
            return [rnn]
        return [rnn, self.classical] if self.classical.needs_budget else [self.classical]

    def caches(self, compressor: nn.Module) -> list[tuple[DecodedImageCache, Any]]:
        """(cache, channel) in build order: the recurrent codec's, then the classical codec's matched to it."""
        if self.cache_dir is None:
            raise ValueError("no decoded-image cache: cache_dir is None (images are decoded on every read)")
        out: list[tuple[DecodedImageCache, Any]] = []
        matched_to: dict | None = None
        for channel in self.channels(compressor):
            settings = channel.settings() if matched_to is None else {**channel.settings(), "matched_to": matched_to}
            out.append((DecodedImageCache(self.cache_dir, settings), channel))
            matched_to = settings
        return out

    def build(
        self,
        compressor: nn.Module,
        sources: list[Path],
        rank: int = 0,
        world_size: int = 1,
        barrier: Callable[[str], None] | None = None,
    ) -> DecodedImageCache:
        """Verify and fill the caches for ``sources`` (this rank's share; ``barrier`` between the steps under DDP)."""
        on_cpu = next(compressor.parameters()).device.type == "cpu"
        budgets = None
        cache = None
        for cache, channel in self.caches(compressor):
            in_workers = channel.name != "rnn" or on_cpu
            built = cache.build(
                sources,
                channel,
                budgets=budgets,
                num_workers=self.cache_workers if in_workers else min(self.cache_workers, 2),
                in_workers=in_workers,
                rank=rank,
                world_size=world_size,
                description=f"{channel.name} k={self.iterations}",
            )
            if world_size > 1 and barrier is not None:
                barrier("decoded_cache")
            if built:
                rank_zero_info(f"decoded {built} images into {cache.directory} ({cache.disk_bytes() / 1e6:.1f} MB)")
            if channel.name == "rnn" and self.classical is not None:
                budgets = {str(s): cache.record(s).bytes for s in sources}
        assert cache is not None
        return cache

    def prepare(
        self,
        datamodule: Any,
        stage: str,
        compressor: nn.Module,
        rank: int = 0,
        world_size: int = 1,
        barrier: Callable[[str], None] | None = None,
    ) -> None:
        """Point the datasets of ``stage`` at original or decoded images and measure the evaluation images' bytes
        (into :attr:`rates`)."""
        roles = STAGE_ROLES[stage]
        compressed = [r for r in roles if self.images_for(r) == "compressed"]
        leaves = {role: leaf_datasets(role_dataset(datamodule, role)) for role in roles}
        cache = decoder = None
        if compressed and self.cache_dir is not None:
            sources = sorted({p for r in compressed for leaf in leaves[r] for p in leaf.source_paths()})
            cache = self.build(compressor, sources, rank, world_size, barrier)
        elif compressed:
            decoder = DecodingLoader(tuple(self.channels(compressor, cpu_copy=True)))
        for role in roles:
            decoded = self.images_for(role) == "compressed"
            records = []
            for leaf in leaves[role]:
                if not isinstance(leaf.image_loader, CachedImageLoader | DecodingLoader):
                    self._source_loaders[id(leaf)] = leaf.image_loader  # the dataset's own reader of source files
                paths = leaf.source_paths()
                if not decoded:
                    leaf.image_loader = self._source_loaders.get(id(leaf), load_rgb)
                    records += [source_record(p) for p in paths]
                elif cache is not None:
                    leaf.image_loader = cache.loader()
                    records += [cache.record(p) for p in paths]
                else:
                    leaf.image_loader = decoder
                    if role != "train":  # the bytes of the evaluation images, measured once here
                        records += [decoder.transmit(p)[1] for p in track(paths, description=f"measuring {role} bytes")]
            self.prepared[role] = "original" if not decoded else str(cache.directory) if cache else "decoded on the fly"
            if role != "train":
                self.rates[role] = rate_summary(records)
