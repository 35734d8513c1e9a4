"""One seeding scheme for every DataModule: what a sample looks like depends on (seed, epoch, index) only.

The order of an epoch and the augmentation of every sample are drawn from the run's base seed (the
``seed_everything`` value, which Lightning keeps in ``PL_GLOBAL_SEED``; 0 when unset, as Lightning's own
``DistributedSampler`` does), the epoch and the sample's index — never from a global random state. So
the same sample gets the same crop whichever worker process loads it, whether the workers are
persistent or restarted, in the main process (``num_workers=0``) as in a worker, on any DDP rank, and
after a resume (see ``datamodules.loaders``).

How: :class:`SeededSampler` yields ``(index, seed)`` keys; :class:`SeededSamples` wraps a dataset, seeds
its albumentations pipelines from ``seed`` (:func:`seed_pipeline`) and returns ``dataset[index]``.
Augmentation must therefore draw from its pipeline's own random state (albumentations 2.x transforms
draw from ``self.py_random`` / ``self.random_generator``).

``Compose.set_random_seed(s)`` alone is not enough: it gives every transform of the pipeline the same
seed, so their first draws are equal — a random crop's position and a flip's coin become the same
number (on 400 seeds of crop + flip, correlation −0.86). :func:`seed_pipeline` gives each transform
its own seed derived from the sample's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Sampler, Subset

ORDER, AUGMENTATION = 0, 1  # what a derived seed is for (keeps the two streams apart)


def base_seed() -> int:
    """The run's seed: ``seed_everything``'s value (``PL_GLOBAL_SEED``), else 0."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def epoch_generator(seed: int, purpose: int, epoch: int) -> np.random.Generator:
    """The generator of one purpose (``ORDER`` or ``AUGMENTATION``) in one epoch."""
    return np.random.default_rng(np.random.SeedSequence([seed, purpose, epoch]))


def epoch_order(seed: int, epoch: int, length: int, shuffle: bool) -> np.ndarray:
    """The indices of ``length`` samples in the order of ``epoch`` (``0..length-1`` unless ``shuffle``)."""
    return epoch_generator(seed, ORDER, epoch).permutation(length) if shuffle else np.arange(length)


def sample_seeds(seed: int, epoch: int, length: int) -> np.ndarray:
    """``sample_seeds(seed, epoch, n)[i]`` seeds the augmentation of sample ``i`` in ``epoch`` (uint32)."""
    return epoch_generator(seed, AUGMENTATION, epoch).integers(0, 2**32, size=length, dtype=np.uint32)


class SeededSampler(Sampler[tuple[int, int]]):
    """Every index of a ``length``-sample dataset once per epoch, each with the seed of its augmentation.

    Yields ``(index, seed)`` with ``seed = sample_seeds(base, epoch, length)[index]``; shuffled with
    :func:`epoch_order` when ``shuffle``. Lightning calls :meth:`set_epoch` before every epoch (and
    forwards it through the ``DistributedSamplerWrapper`` it puts around this sampler under DDP).

    Args:
        length: number of samples of the dataset.
        shuffle: a new order every epoch (training) or ``0..length-1`` (evaluation).
        seed: base seed; ``None`` reads the run's (:func:`base_seed`) when the sampler is built.
    """

    def __init__(self, length: int, shuffle: bool, seed: int | None = None) -> None:
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self.length = length
        self.shuffle = shuffle
        self.seed = base_seed() if seed is None else int(seed)
        if self.seed < 0:
            raise ValueError(f"the base seed must be >= 0, got {self.seed}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seeds = sample_seeds(self.seed, self.epoch, self.length)
        for index in epoch_order(self.seed, self.epoch, self.length, self.shuffle).tolist():
            yield index, int(seeds[index])


def datasets_in(dataset: Dataset) -> Iterator[Dataset]:
    """``dataset`` and every dataset inside it (through ``Subset`` and ``ConcatDataset``)."""
    yield dataset
    if isinstance(dataset, Subset):
        yield from datasets_in(dataset.dataset)
    if isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            yield from datasets_in(part)


def _transforms_in(pipeline: Any) -> Iterator[Any]:
    """``pipeline`` then every transform inside it, parents before children (albumentations composes)."""
    yield pipeline
    for child in getattr(pipeline, "transforms", None) or []:
        yield from _transforms_in(child)


def seed_pipeline(pipeline: Any, seed: int) -> None:
    """Seed an albumentations pipeline and each transform inside it with its own seed derived from ``seed``."""
    nodes = [node for node in _transforms_in(pipeline) if callable(getattr(node, "set_random_seed", None))]
    for node, node_seed in zip(nodes, np.random.SeedSequence(seed).generate_state(len(nodes)), strict=True):
        node.set_random_seed(int(node_seed))  # a compose re-seeds its children: they come after it


def seedable_pipelines(dataset: Dataset) -> list[Any]:
    """The ``transform`` pipelines in ``dataset`` that take a seed (``set_random_seed``: albumentations)."""
    pipelines = [getattr(d, "transform", None) for d in datasets_in(dataset)]
    return [p for p in pipelines if callable(getattr(p, "set_random_seed", None))]


class SeededSamples(Dataset):
    """``dataset`` read with :class:`SeededSampler` keys: ``self[(index, seed)]`` seeds the augmentation
    pipelines of ``dataset`` from ``seed`` (:func:`seed_pipeline`), then returns ``dataset[index]``. A plain ``self[index]`` reads
    without reseeding."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.pipelines = seedable_pipelines(dataset)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if isinstance(key, tuple):
            index, seed = key
            for pipeline in self.pipelines:
                seed_pipeline(pipeline, seed)
        else:
            index = key
        return self.dataset[index]
