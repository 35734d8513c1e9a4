"""The one DataLoader recipe of every DataModule: seeded per sample and epoch, resumable mid-epoch.

:func:`seeded_loader` builds a :class:`ResumableDataLoader` over :class:`~datamodules.seeding.SeededSamples`
with a :class:`~datamodules.seeding.SeededSampler` (see ``datamodules.seeding``: a sample's order and
augmentation depend on (seed, epoch, index) only, not on which process or worker loads it).

Resume, as Lightning does it (``lightning.pytorch.loops.fit_loop``): a train loader that has
``state_dict``/``load_state_dict`` (Lightning's ``_Stateful``) is saved in every checkpoint under
``loops.fit_loop.state_dict.combined_loader``, and loaded back when a fit restarts inside an epoch.
:class:`ResumableDataLoader`'s state is ``{"epoch", "batches"}``, the batches it has handed out in that
epoch; after loading it the next pass over that epoch starts at that batch, skipping indices (no image
is read for the skipped batches). A resume at an epoch boundary needs no loader state: the epoch's
order and seeds follow from the epoch number that Lightning sets.

Two details make resume exact with workers (``num_workers >= 1``, persistent or not):

- iteration starts lazily, at the first batch: Lightning creates the iterator of a resumed fit before
  it calls ``set_epoch``, and worker processes would otherwise prefetch indices of the wrong epoch;
- the loader draws its worker base seeds from a private generator, not from torch's global one, so
  starting workers (once with persistent workers, every epoch without) never shifts the main process's
  random stream (the stochastic binarizer's noise, dropout).

Under DDP Lightning re-creates the loader with its distributed sampler around :class:`SeededSampler`
(``DistributedSamplerWrapper``) and re-creates :class:`ResumableBatchSampler` around that (it subclasses
``BatchSampler`` with its signature); the skipped batches are then the rank's own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from datamodules.seeding import SeededSampler, SeededSamples


class ResumableBatchSampler(BatchSampler):
    """``BatchSampler`` whose next pass can start at a given batch of a given epoch (:meth:`resume_at`).

    The epoch is the sampler's (``sampler.epoch``, set by Lightning's ``set_epoch``); a pending resume
    for another epoch (the saved epoch had ended) is dropped.
    """

    def __init__(self, sampler: Sampler[Any], batch_size: int, drop_last: bool) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self._resume: tuple[int, int] | None = None
        self.start = 0  # the batch the current pass started at

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def resume_at(self, epoch: int, batch: int) -> None:
        """Start the next pass at ``batch`` if it is a pass over ``epoch``."""
        self._resume = (epoch, batch)

    def __iter__(self) -> Iterator[list[Any]]:
        # a generator: the resume is taken by the pass that draws a batch (a DataLoader iterator calls
        # iter() on its batch sampler twice when it starts workers, and draws from the second)
        resume, self._resume = self._resume, None
        self.start = resume[1] if resume is not None and resume[0] == self.epoch else 0
        yield from itertools.islice(super().__iter__(), self.start, None)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` (with a :class:`ResumableBatchSampler`) whose position in the epoch is saved with
    each checkpoint; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch, self._batches = 0, 0

    @property
    def resumable(self) -> ResumableBatchSampler | None:
        """The batch sampler, if it can resume (for ``predict`` Lightning wraps it in one that tracks indices)."""
        return self.batch_sampler if isinstance(self.batch_sampler, ResumableBatchSampler) else None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._batches_from_first_next()

    def _batches_from_first_next(self) -> Iterator[Any]:
        iterator = super().__iter__()  # runs at the first next(): after Lightning's set_epoch
        resumable = self.resumable
        self._epoch, self._batches = (resumable.epoch if resumable else 0), 0
        for count, batch in enumerate(iterator, start=1):
            self._batches = (resumable.start if resumable else 0) + count  # start is known once a batch was drawn
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The epoch being read and the batches handed out in it."""
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if self.resumable is None:
            raise TypeError(f"cannot resume inside an epoch with a {type(self.batch_sampler).__name__}")
        self.resumable.resume_at(int(state_dict["epoch"]), int(state_dict["batches"]))


def seeded_loader(
    dataset: Dataset | None,
    *,
    train: bool,
    batch_size: int,
    num_workers: int,
    pin_memory: bool = True,
    persistent_workers: bool = True,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    seed: int | None = None,
) -> ResumableDataLoader:
    """The loader of every DataModule.

    ``train``: shuffled every epoch, the last partial batch dropped (unless the set is smaller than a
    batch); otherwise in order. ``seed``: the base seed (default: the run's, ``seed_everything``).
    """
    if dataset is None:
        raise RuntimeError("the DataModule has no dataset for this stage yet: call setup() first")
    sampler = SeededSampler(len(dataset), shuffle=train, seed=seed)  # type: ignore[arg-type]
    drop_last = train and len(dataset) > batch_size  # type: ignore[arg-type]
    return ResumableDataLoader(
        SeededSamples(dataset),
        batch_sampler=ResumableBatchSampler(sampler, batch_size, drop_last),
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(sampler.seed),
    )


recognition_loader = seeded_loader
"""The name the recognition DataModules import (``imagenet_subset``, ``cifar10``, ``voc``)."""
