"""GPU: every method fits a few steps in bf16-mixed with ``configs/trainer/gpu.yaml``; the codec's bytes do
not depend on the device.

Marked ``gpu`` and skipped without CUDA (``pytest -m gpu`` runs only these). After the fit, the trained
weights code the same images on CUDA and on the CPU: the bitstreams must be byte-identical (a stream
written on a GPU server and one written on a CPU edge device must be the same stream), and a stream
decodes to the same image (to float tolerance) on either device. For CodeRecognition (decoder removed)
the edge's ±1 codes — the bits its stream packs — must be equal, and the server's logits close. The comparison runs in fp32 without
TF32 (cuDNN's default TF32 convolutions round to 10 mantissa bits and can flip a sign bit of the codes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tests.cli.test_ddp import cli_args, import_object, methods

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

REPO = Path(__file__).resolve().parents[1]
GPU_FIT = [
    "--config", str(REPO / "configs/trainer/gpu.yaml"),
    "--trainer.max_steps", "3", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "2",
    "--trainer.num_sanity_val_steps", "0", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
    "--seed_everything", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    from datamodules.fixtures import write_imagenet, write_voc

    root = tmp_path_factory.mktemp("fixtures")
    write_imagenet(root / "imagenet", train_per_wnid=2, val_per_wnid=2, image_size=(40, 48))
    write_voc(root / "voc", trainval_2007=4, test_2007=10, trainval_2012=2, image_size=(64, 80))
    return root


def fit_on_gpu(tmp_path: Path, name: str, spec: dict) -> Path:
    from cli.lightning_cli import SplitCVCLI

    cli = SplitCVCLI(args=["fit", *GPU_FIT, *cli_args(name, spec), "--run.root", str(tmp_path / "runs")])
    assert cli.trainer.precision == "bf16-mixed" and cli.trainer.strategy.root_device.type == "cuda"
    loss = cli.trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss), f"{name}: train/loss {loss}"
    (run,) = (tmp_path / "runs" / name).iterdir()
    return run / "checkpoints" / "last.ckpt"


def first_validation_batch(spec: dict) -> torch.Tensor:
    """The images of the method's first validation batch."""
    data_path, data_args = spec["data"]
    data = import_object(data_path)(**data_args)
    data.setup("validate")
    return next(iter(data.val_dataloader()))[0]


@contextmanager
def fp32_without_tf32() -> Iterator[None]:
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


@pytest.mark.parametrize("name", ["rnn_compressor", "code_recognition", "detector"])
def test_bf16_fit_on_gpu_and_the_same_bytes_as_on_the_cpu(tmp_path, fixtures, name):
    from coding.rnn_bitstream import compress, decompress

    spec = methods(fixtures)[name]
    checkpoint = fit_on_gpu(tmp_path, name, spec)
    model_class = import_object(spec["model"][0])
    on = {d: model_class.load_from_checkpoint(checkpoint, map_location=d).eval() for d in ("cuda", "cpu")}
    if name == "detector":  # no wire: the fit above (bf16, finite loss, validation ran) is the check
        return
    images = first_validation_batch(spec)
    with torch.no_grad(), fp32_without_tf32():
        if name == "rnn_compressor":
            streams = {d: compress(m.codec, images.to(d), m.iterations) for d, m in on.items()}
            assert streams["cuda"] == streams["cpu"]
            decoded = {d: decompress(m.codec, streams["cpu"]).cpu() for d, m in on.items()}
        else:  # CodeRecognition: the edge's ±1 codes are what the wire packs; the server classifies them
            codes = {d: m.model.encode(images.to(d)).cpu() for d, m in on.items()}
            assert torch.equal(codes["cuda"], codes["cpu"])
            decoded = {
                d: m.model.classify_codes(codes["cpu"].to(d), tuple(images.shape[-2:])).cpu() for d, m in on.items()
            }
    assert torch.allclose(decoded["cuda"], decoded["cpu"], atol=1e-4, rtol=1e-4)
