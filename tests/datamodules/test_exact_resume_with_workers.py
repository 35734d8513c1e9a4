"""Exact resume with DataLoader workers, and the one seeding scheme behind it (``datamodules.seeding``).

The fits use Lightning's Trainer directly, with the two pieces of ``train.py`` that resume depends on
(``ModelCheckpoint(save_last=True)`` and ``RNGStateCheckpoint``), a tiny ``RNNCompressor`` (its
stochastic binarizer draws from the main process's RNG) and the bundled photos read by one persistent
worker process. A callback records a fingerprint of every training sample (its pixel sum), so "no
sample lost or repeated" is checked directly, besides the final weights.
"""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from callbacks.rng_state import RNGStateCheckpoint
from datamodules.loaders import seeded_loader
from datamodules.patch_datasets import RandomPatchDataset
from datamodules.sample_images import SampleImagesDataModule, load_sample_photo
from datamodules.seeding import SeededSampler, SeededSamples, seed_pipeline
from lightning_modules.rnn_compressor import RNNCompressor

pytestmark = pytest.mark.usefixtures("one_thread")


class SampleRecorder(Callback):
    """Appends the pixel sum of every training sample, in the order the model sees them."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen += batch.double().sum(dim=(1, 2, 3)).tolist()


def fit(root: Path, num_workers: int = 1, ckpt_path: str | None = None, **trainer_args) -> tuple[dict, list[float]]:
    """One fit as ``train.py`` runs it (seeded, checkpoint with RNG state); returns (last.ckpt, samples seen)."""
    L.seed_everything(0, verbose=False)
    recorder = SampleRecorder()
    checkpoints = root / "checkpoints"
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        deterministic=True,
        default_root_dir=root,
        callbacks=[
            ModelCheckpoint(dirpath=checkpoints, save_top_k=0, save_last=True, every_n_train_steps=1),
            RNGStateCheckpoint(),
            recorder,
        ],
        **trainer_args,
    )
    model = RNNCompressor(width=0.0625, iterations=2)
    data = SampleImagesDataModule(patches_per_image=2, batch_size=4, val_max_side=64, num_workers=num_workers)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return torch.load(checkpoints / "last.ckpt", weights_only=True), recorder.seen


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.slow
def test_epoch_boundary_resume_with_a_persistent_worker_is_bit_identical(tmp_path: Path) -> None:
    # one persistent worker serves both epochs of the uninterrupted fit; the resumed fit starts a new one
    full, full_seen = fit(tmp_path / "full", max_epochs=2, limit_train_batches=3)
    first, first_seen = fit(tmp_path / "part", max_epochs=1, limit_train_batches=3)
    resumed, resumed_seen = fit(
        tmp_path / "part", max_epochs=2, limit_train_batches=3, ckpt_path=str(tmp_path / "part/checkpoints/last.ckpt")
    )
    assert first["global_step"] == 3 and resumed["global_step"] == full["global_step"] == 6
    assert first_seen + resumed_seen == full_seen  # the second epoch's samples, crops included
    assert full_seen[:12] != full_seen[12:]  # a new order and new crops every epoch
    assert_same_weights(full, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [3, 5])  # inside an epoch; at the last batch of a (limited) epoch
def test_mid_epoch_resume_with_a_worker_neither_loses_nor_repeats_a_sample(tmp_path: Path, stop: int) -> None:
    steps = {"max_epochs": -1, "limit_train_batches": 5}
    full, full_seen = fit(tmp_path / "full", max_steps=8, **steps)
    part, part_seen = fit(tmp_path / "part", max_steps=stop, **steps)
    resumed, resumed_seen = fit(
        tmp_path / "part", max_steps=8, ckpt_path=str(tmp_path / "part/checkpoints/last.ckpt"), **steps
    )
    assert part["global_step"] == stop and resumed["global_step"] == 8
    assert len(part_seen) == 4 * stop and len(resumed_seen) == 4 * (8 - stop)
    assert part_seen + resumed_seen == full_seen
    assert_same_weights(full, resumed)


def test_predict_reads_every_held_out_photo_once() -> None:
    # for predict Lightning re-creates the loader with its own batch sampler around ours (to track indices)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    data = SampleImagesDataModule(val_max_side=32, num_workers=0)
    out = trainer.predict(RNNCompressor(width=0.0625, iterations=1), datamodule=data)
    assert [name for batch in out for name in batch["names"]] == data.val_photos


def photos() -> list[np.ndarray]:
    return [load_sample_photo(name) for name in ("astronaut", "camera", "coffee")]


def batches(loader, epoch: int) -> list[torch.Tensor]:
    loader.batch_sampler.sampler.set_epoch(epoch)  # what Lightning does before every epoch
    return list(loader)


def test_a_sample_is_the_same_in_any_worker_and_in_the_main_process_and_new_every_epoch() -> None:
    dataset = RandomPatchDataset(photos(), patch_size=8, patches_per_image=4)
    main = seeded_loader(dataset, train=True, batch_size=3, num_workers=0, seed=5)
    workers = seeded_loader(dataset, train=True, batch_size=3, num_workers=2, seed=5)  # items alternate workers
    assert workers.persistent_workers
    for epoch in (0, 1):
        a, b = batches(main, epoch), batches(workers, epoch)
        assert len(a) == len(b) == 4
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # in the main process too, epoch 1 is a new draw, and epoch 0 again is the same draw
    assert not torch.equal(torch.cat(batches(main, 0)), torch.cat(batches(main, 1)))
    assert torch.equal(torch.cat(batches(main, 0)), torch.cat(batches(workers, 0)))
    # the seed of a sample is its own: the same index gives the same crop in any order of reading
    keys = list(SeededSampler(len(dataset), shuffle=True, seed=5))
    seeded = SeededSamples(dataset)
    assert torch.equal(seeded[keys[3]], seeded[keys[3]])


def test_the_two_patch_pipelines_are_one(tmp_path: Path) -> None:
    from datamodules.fixtures import write_imagenet
    from datamodules.imagenet_subset import ImageNetSubset

    root = write_imagenet(tmp_path / "imagenet", class_list="imagenet10")
    imagenet = ImageNetSubset(str(root), class_list=str(root / "class_list.txt"), mode="patches", patch_size=16)
    compressor = RandomPatchDataset(photos(), patch_size=16)
    image = photos()[0]
    pipelines = imagenet.train_pipeline(), compressor.transform
    for seed in (1, 2, 3):
        for pipeline in pipelines:
            seed_pipeline(pipeline, seed)
        a, b = (pipeline(image=image)["image"] for pipeline in pipelines)
        assert a.shape == (3, 16, 16) and torch.equal(a, b)


def crop_row_and_flip(pipeline, seeding) -> tuple[np.ndarray, np.ndarray]:
    """Top row and flip of 300 random 8×64 crops of a 64×64 image whose pixels encode their row and side."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :32, 0] = 255  # left half red: a flipped patch of the left half has red on its right
    image[:, :, 1] = np.arange(64)[:, None]  # green = row
    rows, flips = [], []
    for seed in range(300):
        seeding(pipeline, seed)
        patch = pipeline(image=image)["image"].numpy()
        rows.append(patch[1, 0, 0])
        flips.append(patch[0, 0, 0] == 0)
    return np.array(rows), np.array(flips)


def test_a_samples_crop_and_flip_are_drawn_independently() -> None:
    from albumentations import Compose, HorizontalFlip, RandomCrop
    from albumentations.pytorch import ToTensorV2

    def make() -> Compose:
        return Compose([RandomCrop(8, 64), HorizontalFlip(p=0.5), ToTensorV2()])

    # albumentations' own set_random_seed gives every transform the same seed: crop row and flip coin
    # come from the same first draw
    rows, flips = crop_row_and_flip(make(), lambda p, s: p.set_random_seed(s))
    assert abs(np.corrcoef(rows, flips)[0, 1]) > 0.5
    rows, flips = crop_row_and_flip(make(), seed_pipeline)
    assert abs(np.corrcoef(rows, flips)[0, 1]) < 0.2
    assert 0.35 < flips.mean() < 0.65


class Indices(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 20

    def __getitem__(self, index: int) -> int:
        return index


def test_under_ddp_each_rank_resumes_its_own_shard_mid_epoch() -> None:
    # what Lightning does under DDP: the DataModule's loader is built inside its re-instantiation context,
    # then re-created with a DistributedSamplerWrapper around our sampler (and our batch sampler re-created)
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader

    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        loader = seeded_loader(Indices(), train=True, batch_size=3, num_workers=0, seed=7)

    def rank_loader(rank: int):
        sampler = DistributedSamplerWrapper(loader.batch_sampler.sampler, num_replicas=2, rank=rank, shuffle=True)
        return _update_dataloader(loader, sampler)

    def epoch(dl, state=None) -> list[list[int]]:
        if state is not None:
            dl.load_state_dict(state)
        dl.batch_sampler.sampler.set_epoch(1)  # Lightning, at the start of the epoch (after the load)
        return [batch.tolist() for batch in dl]

    shards = [epoch(rank_loader(rank)) for rank in (0, 1)]
    seen = sorted(i for shard in shards for batch in shard for i in batch)
    assert seen == sorted(set(seen)) and len(seen) == 18  # 10 per rank, the last partial batch dropped
    for rank, full in enumerate(shards):
        stopped = rank_loader(rank)
        stopped.batch_sampler.sampler.set_epoch(1)
        head = [batch.tolist() for _, batch in zip(range(2), stopped, strict=False)]
        assert stopped.state_dict() == {"epoch": 1, "batches": 2}
        assert head + epoch(rank_loader(rank), stopped.state_dict()) == full
        # a saved position of an epoch that has ended is not applied to the next one
        assert epoch(rank_loader(rank), {"epoch": 0, "batches": 2}) == full
