"""DDP: a 2-process CPU (gloo) fit of every method through ``train.py``, checked against one process.

Two processes are started once, as ``torchrun`` starts them (its environment variables: Lightning then
takes the ranks from them and launches nothing itself); each runs ``SplitCVCLI fit`` of every method
in turn with ``configs/trainer/ddp.yaml`` made CPU-sized. The checks:

- the validation metrics that rank 0 logs are those of the whole validation set: the same values as
  a single-process ``validate`` of the checkpoint the DDP fit wrote (they would be rank 0's half
  without the reduction), and rank 1 holds the same values. Rank 1 scores its half with rank 0's weights
  and statistics: ``FBNetSearch`` (manual optimisation, ``ddp_find_unused_parameters_true``) broadcasts its
  BatchNorm statistics first, which Lightning's DDP does not do for it; its batches of 3 + 1 images in one
  process against 2 + 2 on the ranks would expose a loss averaged per batch instead of per image;
- only rank 0 writes: ``--run.root`` is relative and each rank runs in its own working directory, so
  anything rank 1 wrote (run directory, checkpoint, config, logs) would appear under its own.

Run as a script (``python tests/cli/test_ddp.py SPEC.json``), this file is the per-rank driver.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
WORLD_SIZE = 2

CPU_DDP = [
    "--config", str(REPO / "configs/trainer/ddp.yaml"),
    "--trainer.accelerator", "cpu", "--trainer.devices", str(WORLD_SIZE), "--trainer.precision", "32-true",
    "--trainer.sync_batchnorm", "false",  # SyncBatchNorm runs on GPUs only
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.num_sanity_val_steps", "0",
    "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--seed_everything", "0", "--run.root", "runs",
]  # fmt: skip
COMPRESSOR_CHECKPOINT = "runs/rnn_compressor/ddp/checkpoints/last.ckpt"  # under rank 0's working directory
FBNET_STAGES = [[8, 1, 1], [16, 1, 2]]


def methods(fixtures: Path, work: Path) -> dict[str, dict]:
    """Every method: model and data (class and init args) at tiny widths; validation sets of even size
    (2 photos; 10 classes × 2 images; 10 VOC test images; 4 CIFAR-10 images), so DDP's sampler pads no
    duplicate in. In order: the compressor's checkpoint (``--run.id ddp``, rank 0's, under ``work``) is the
    frozen wire of the recogniser on decoded images after it."""
    imagenet, voc = fixtures / "imagenet", fixtures / "voc"
    imagenet_data = (
        "datamodules.imagenet_subset.ImageNetSubset",
        {
            "root": str(imagenet),
            "class_list": str(imagenet / "class_list.txt"),
            "image_size": 32,
            "batch_size": 4,
            "num_workers": 0,
            "pin_memory": False,
        },
    )
    cifar = {
        "root": str(fixtures / "cifar10"),
        "val_fraction": 0.2,
        "batch_size": 3,
        "num_workers": 0,
        "pin_memory": False,
        "verify_checksums": False,
    }  # 4 validation images: batches of 3 + 1 in one process, of 2 on each rank (a loss averaged per batch differs)
    # the latency cache that the fixture's cost table filled: no rank measures latency
    costs = {
        "costs.cache_dir": str(fixtures / "latency"),
        "costs.warmup": 0,
        "costs.repeats": 1,
        "costs.progress": False,
    }
    return {
        "rnn_compressor": {
            "model": ("lightning_modules.rnn_compressor.RNNCompressor", {"width": 0.0625, "iterations": 2}),
            "data": (
                "datamodules.sample_images.SampleImagesDataModule",
                {"val_photos": ["chelsea", "coffee"], "patches_per_image": 2, "batch_size": 4, "val_max_side": 64},
            ),
        },
        "code_recognition": {
            "model": (
                "lightning_modules.code_recognition.CodeRecognition",
                {"num_classes": 10, "iterations": 1, "codec_width": 0.0625, "latency_warmup": 1, "latency_repeats": 1},
            ),
            "data": imagenet_data,
        },
        "compressed_image_recognition": {
            "model": (
                "lightning_modules.compressed_image_recognition.CompressedImageRecognition",
                {
                    "task": "classification",
                    "num_classes": 10,
                    "channel": "rnn",
                    "iterations": 2,
                    "codec_width": 0.0625,
                    "init_compressor_from": str(work / "rank0" / COMPRESSOR_CHECKPOINT),
                    "decoded_cache_dir": str(work / "decoded_cache"),  # shared: each rank decodes half
                    "cache_workers": 0,
                    "arch": "shufflenet_v2_x0_5",
                },
            ),
            "data": imagenet_data,
        },
        "shared_trunk": {
            "model": (
                "lightning_modules.shared_trunk.SharedTrunkTask",
                {
                    "trunk": "mobilenet_v2",
                    "task": "classification",
                    "num_classes": 10,
                    "width": 0.25,
                    "image_size": 32,
                    "codec": "hevc",
                    "codec_quality": 35,
                    "latency_warmup": 0,
                    "latency_repeats": 1,
                },
            ),
            "data": imagenet_data,
        },
        "fbnet_search": {
            "model": (
                "lightning_modules.fbnet_search.FBNetSearch",
                {"width": 0.25, "stages": FBNET_STAGES, "warmup_epochs": 0, "export_samples": 1, **costs},
            ),
            "data": ("datamodules.cifar10.CIFAR10", {**cifar, "split": "search"}),
            "args": ["--trainer.strategy", "ddp_find_unused_parameters_true"],
        },
        "fbnet_child": {
            "model": (
                "lightning_modules.fbnet_child.FBNetChild",
                {"architecture": str(fixtures / "fbnet" / "architecture.txt"), "measure_ms_per_image": False, **costs},
            ),
            "data": ("datamodules.cifar10.CIFAR10", cifar),
        },
        "quantized_finetune": {
            "model": (
                "lightning_modules.quantized_finetune.QuantizedFinetune",
                {
                    "arch": "toy3",
                    "num_classes": 10,
                    "width": 4,
                    "convert": True,
                    "bases": 2,
                    "bits": 3,
                    "decomposition": "greedy",
                },
            ),
            "data": ("datamodules.cifar10.CIFAR10", cifar),
        },
        "detector": {
            "model": (
                "lightning_modules.detector.Detector",
                {"num_classes": 21, "width_mult": 0.25, "image_size": 64, "bn_momentum": 0.1},
            ),
            "data": (
                "datamodules.voc.VOC",
                {
                    "root": str(voc),
                    "train_splits": ["2007-trainval"],
                    "image_size": 64,
                    "batch_size": 2,
                    "num_workers": 0,
                    "pin_memory": False,
                },
            ),
        },
    }


def cli_args(name: str, spec: dict) -> list[str]:
    args = ["--run.name", name, "--run.id", "ddp", *spec.get("args", [])]
    for part in ("model", "data"):
        class_path, init = spec[part]
        args += [f"--{part}", class_path]
        for key, value in init.items():
            args += [f"--{part}.{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def import_object(path: str):
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def run_rank(spec_file: str) -> None:
    """One rank: fit every method through the CLI; write the validation metrics it holds afterwards."""
    from cli.lightning_cli import SplitCVCLI

    spec = json.loads(Path(spec_file).read_text())
    rank = int(os.environ["RANK"])
    for name, args in spec["fits"].items():
        cli = SplitCVCLI(args=["fit", *CPU_DDP, *args])
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
        Path(spec["out"], f"{name}.rank{rank}.json").write_text(json.dumps(metrics))


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    from datamodules.fixtures import write_cifar10, write_imagenet, write_voc
    from models.fbnet import cifar10_space, write_architecture
    from models.fbnet_costs import CostSettings, build_cost_table

    root = tmp_path_factory.mktemp("fixtures")
    write_imagenet(root / "imagenet", train_per_wnid=2, val_per_wnid=2, image_size=(40, 48))
    write_voc(root / "voc", trainval_2007=4, test_2007=10, trainval_2012=2, image_size=(64, 80))
    write_cifar10(root / "cifar10", train_per_batch=4, test_images=4)
    # an exported child architecture with its cost table beside it, as FBNetSearch writes them; the latency
    # cache it fills is the search's too, so no rank measures latency
    space = cifar10_space(width=0.25, stages=FBNET_STAGES)
    write_architecture(root / "fbnet" / "architecture.txt", space, ["k3_e3", "k5_e1_g2"])
    settings = CostSettings(cache_dir=str(root / "latency"), warmup=0, repeats=1, progress=False)
    (root / "fbnet" / "cost_table.json").write_text(json.dumps(build_cost_table(space, settings).to_json()))
    return root


def single_process_validate(spec: dict, checkpoint: Path) -> dict[str, float]:
    import lightning as L

    L.seed_everything(0, verbose=False)
    model_path, _ = spec["model"]
    data_path, data_args = spec["data"]
    model = import_object(model_path).load_from_checkpoint(checkpoint, map_location="cpu")
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=checkpoint.parent / "single_process",  # what a module writes stays in the test's folder
    )
    (metrics,) = trainer.validate(model, datamodule=import_object(data_path)(**data_args), verbose=False)
    return {k: float(v) for k, v in metrics.items()}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_fit_reduces_validation_over_both_ranks_and_only_rank_0_writes(tmp_path, fixtures):
    specs = methods(fixtures, tmp_path)
    out = tmp_path / "metrics"
    out.mkdir()
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"out": str(out), "fits": {n: cli_args(n, s) for n, s in specs.items()}}))
    port = free_port()
    ranks = []
    for rank in range(WORLD_SIZE):
        cwd = tmp_path / f"rank{rank}"
        cwd.mkdir()
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
            "WANDB_MODE": "disabled",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(WORLD_SIZE),
            "LOCAL_WORLD_SIZE": str(WORLD_SIZE),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "GROUP_RANK": "0",
            "TORCHELASTIC_RUN_ID": "splitcv-test-ddp",
        }
        log = (tmp_path / f"rank{rank}.log").open("w")
        command = [sys.executable, str(Path(__file__).resolve()), str(spec_file)]
        ranks.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        codes = [p.wait(timeout=240) for p in ranks]
    finally:
        for p in ranks:
            p.kill()
    logs = {r: (tmp_path / f"rank{r}.log").read_text()[-3000:] for r in range(WORLD_SIZE)}
    assert codes == [0] * WORLD_SIZE, logs

    assert list((tmp_path / "rank1").iterdir()) == []  # rank 1 wrote nothing: no run directory, no checkpoint
    wrong = []
    for name, spec in specs.items():
        (run,) = (tmp_path / "rank0" / "runs" / name).iterdir()  # one run directory
        checkpoint = run / "checkpoints" / "last.ckpt"
        assert checkpoint.is_file() and (run / "config.yaml").is_file()
        rank0, rank1 = (json.loads((out / f"{name}.rank{r}.json").read_text()) for r in range(WORLD_SIZE))
        reference = single_process_validate(spec, checkpoint)
        assert reference and rank0.keys() == rank1.keys() == reference.keys(), name
        for key, value in reference.items():
            print(f"{name} {key}: 2 ranks {rank0[key]:.6g} (rank 1 {rank1[key]:.6g}), 1 process {value:.6g}")
            if rank0[key] != pytest.approx(value, rel=1e-5, abs=1e-6) or rank1[key] != pytest.approx(rank0[key]):
                wrong.append(f"{name} {key}: rank 0 {rank0[key]}, rank 1 {rank1[key]}, one process {value}")
    assert not wrong, "\n".join(wrong)


def test_voc_ap_ranks_tied_scores_alike_in_one_process_and_gathered_from_two() -> None:
    # what the detector fit above found: an untrained SSD gives many equal scores, and the gathered
    # order of DDP (rank 0's images 0, 2, then rank 1's 1, 3) put a false positive of image 2 before
    # the tied true positive of image 1
    from datamodules.voc_eval import evaluate_detections

    gt = {"gt_boxes": np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float), "gt_labels": np.array([1, 1]),
          "gt_difficult": np.array([False, False]), "gt_images": np.array([1, 2])}  # fmt: skip
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)  # image 1: a hit; image 2: a miss
    one_process = evaluate_detections(boxes, np.array([0.5, 0.5]), np.array([1, 1]), np.array([1, 2]), **gt)
    gathered = evaluate_detections(boxes[::-1], np.array([0.5, 0.5]), np.array([1, 1]), np.array([2, 1]), **gt)
    assert one_process["map50"] == pytest.approx(6 / 11)  # recall 0.5 at precision 1 (t = 0, 0.1, …, 0.5)
    assert gathered["map50"] == one_process["map50"]


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    run_rank(sys.argv[1])
