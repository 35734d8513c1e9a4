"""The reconstruction grid of a validation run shows each image's real stream bytes at each k (Figure 3)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from callbacks.reconstruction_grid import ReconstructionGridLogger
from lightning_modules.rnn_compressor import RNNCompressor

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_grid_titles_each_reconstruction_with_its_stream_bytes(tmp_path):
    torch.manual_seed(0)
    val = [(torch.rand(3, 40, 48), f"img{i}") for i in range(3)]
    grid = ReconstructionGridLogger(iterations=[1, 2], images=2, coding="packed")
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=tmp_path, callbacks=[grid],
    )  # fmt: skip
    trainer.fit(
        RNNCompressor(width=0.0625, iterations=2),
        train_dataloaders=DataLoader(torch.rand(2, 3, 32, 32)),
        val_dataloaders=DataLoader(val, batch_size=3),
    )
    # 40×48 pixels: ⌈40/16⌉ · ⌈48/16⌉ = 9 blocks · 32 bits = 36 bytes per iteration, + the 28-byte header
    assert grid.stream_bytes == {1: [64, 64], 2: [100, 100]}
    assert (tmp_path / "plots" / "reconstructions_epoch000.png").is_file()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="images must be >= 1"):
        ReconstructionGridLogger(images=0)
