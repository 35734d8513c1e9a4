"""Tiny demo checkpoints of the four split methods for the deploy tests (short CPU fits on random data)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

WIDTH = 0.0625
NUM_CLASSES = 10


def _fit(module: L.LightningModule, data, path: Path, steps: int = 1) -> Path:
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        default_root_dir=path.parent,
    )
    trainer.fit(module, train_dataloaders=data)
    trainer.save_checkpoint(path)
    return path


def _save_unfitted(module: L.LightningModule, path: Path) -> Path:
    """A checkpoint of a module as constructed (what ``load_from_checkpoint`` reads: weights, hyper-parameters)."""
    state = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    torch.save({**state, "pytorch-lightning_version": L.__version__}, path)
    return path


def labelled(n: int = 4, size: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, size, size, generator=g)
    return DataLoader(TensorDataset(images, torch.randint(0, NUM_CLASSES, (n,), generator=g)), batch_size=n)


def rnn_compressor(path: Path, cell: str = "lstm", iterations: int = 2, reconstruction: str = "additive") -> Path:
    from lightning_modules.rnn_compressor import RNNCompressor

    torch.manual_seed(0)
    module = RNNCompressor(cell=cell, width=WIDTH, iterations=iterations, reconstruction=reconstruction)
    return _fit(module, DataLoader(torch.rand(4, 3, 32, 32), batch_size=2), path, steps=2)


def code_recognition(path: Path, variant: str = "from_layer2", iterations: int = 2) -> Path:
    from lightning_modules.code_recognition import CodeRecognition

    torch.manual_seed(0)
    module = CodeRecognition(
        variant=variant, num_classes=NUM_CLASSES, iterations=iterations, codec_width=WIDTH, latency_repeats=0
    )
    return _fit(module, labelled(), path)


def shared_trunk_detection(path: Path, trunk: str = "mobilenet_v2") -> Path:
    """SSD224 behind the split trunk (a tiny input side; its weights as constructed: a fit needs VOC)."""
    from lightning_modules.shared_trunk import SharedTrunkTask

    torch.manual_seed(0)
    module = SharedTrunkTask(
        trunk=trunk,
        task="detection",
        width=WIDTH * 4,
        image_size=96,
        codec="png",
        codec_quality=None,
        latency_repeats=0,
    )
    return _save_unfitted(module, path)


def shared_trunk(path: Path, trunk: str = "vgg16", codec: str | None = "png") -> Path:
    from lightning_modules.shared_trunk import SharedTrunkTask

    torch.manual_seed(0)
    quality = None if codec in (None, "png") else 90
    module = SharedTrunkTask(
        trunk=trunk,
        num_classes=NUM_CLASSES,
        width=WIDTH * 2,
        image_size=224 if trunk == "vgg16" else 64,
        codec=codec,
        codec_quality=quality,
        latency_repeats=0,
    )
    return _fit(module, labelled(size=64), path)


def decoded_recognition(path: Path, compressor: Path, iterations: int = 2, task: str = "classification") -> Path:
    """The frozen compressor of ``compressor`` + a random ResNet-18 (a fit needs source image files;
    the checkpoint holds every weight the export reads)."""
    from lightning_modules.compressed_image_recognition import CompressedImageRecognition

    torch.manual_seed(0)
    module = CompressedImageRecognition(
        task=task,
        num_classes=NUM_CLASSES if task == "classification" else 21,
        iterations=iterations,
        codec_width=WIDTH,
        arch="resnet18",
        detector_width=0.25,
        detector_image_size=96,
        decoded_cache_dir=None,
    )
    module.load_compressor(str(compressor))
    return _save_unfitted(module, path)
