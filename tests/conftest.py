"""Shared fixtures: tiny, fast settings for CLI runs on the CPU."""

import os

import lightning.pytorch  # noqa: F401  (before anything imports rich.progress: see below)
import pytest
import torch

# Lightning first: once `rich.progress` has created typing's `Optional[Union[float, int]]`, Python's typing
# cache hands the equal `Optional[Union[int, float]]` of Trainer's signature back float-first, and
# jsonargparse then reads `--trainer.limit_train_batches 1` as 1.0 (every batch). train.py imports Lightning
# before any of our modules for the same reason.
os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_COMPRESSOR = [
    "--config", "configs/trainer/debug.yaml",
    "--model", "lightning_modules.rnn_compressor.RNNCompressor",
    "--model.width", "0.0625", "--model.iterations", "2",
    "--data", "datamodules.sample_images.SampleImagesDataModule",
    "--data.patches_per_image", "4", "--data.batch_size", "8", "--data.val_max_side", "64",
]  # fmt: skip


@pytest.fixture
def tiny_compressor_args():
    """CLI arguments of a tiny RNNCompressor run on the bundled photos (add ``--run.root``)."""
    return list(TINY_COMPRESSOR)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a
    shared 2-core machine, two OpenMP threads stall each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
