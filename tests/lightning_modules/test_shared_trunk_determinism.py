"""Issue 16.6: the shared-trunk demo config, run twice in separate processes (few batches), gives the same final
metrics and weights exactly — nothing but the seed (and the pinned thread count) decides them."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datamodules.fixtures import write_imagenet

ROOT = Path(__file__).resolve().parents[2]


def fit(run_root: Path, data: Path, run_id: str) -> tuple[list[dict], dict[str, torch.Tensor]]:
    command = [
        sys.executable, str(ROOT / "train.py"), "fit",
        "--config", str(ROOT / "configs/trainer/cpu.yaml"), "--config", str(ROOT / "configs/shared_trunk/demo.yaml"),
        "--config", str(ROOT / "configs/logger/csv.yaml"),
        "--data.init_args.root", str(data), "--data.init_args.class_list", str(data / "class_list.txt"),
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--data.init_args.batch_size", "8", "--trainer.num_sanity_val_steps", "0",
        "--trainer.check_val_every_n_epoch", "1", "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false", "--run.root", str(run_root), "--run.id", run_id,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    done = subprocess.run(command, cwd=run_root, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    run = run_root / "shared_trunk_demo" / run_id
    (metrics,) = list(run.rglob("metrics.csv"))
    with metrics.open() as f:
        rows = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    return rows, state


@pytest.mark.slow
def test_two_demo_runs_in_separate_processes_agree_exactly(tmp_path):
    data = write_imagenet(tmp_path / "imagenet")
    first_rows, first_state = fit(tmp_path, data, "first")
    second_rows, second_state = fit(tmp_path, data, "second")
    assert first_state.keys() == second_state.keys()
    for key, value in first_state.items():
        assert torch.equal(value, second_state[key]), key
    val = [row for row in first_rows if "val/acc_top1" in row]
    assert len(val) == 2  # one validation per epoch
    for row in (first_rows, second_rows):
        for r in row:
            r.pop("test/ms_per_image", None)  # a wall-clock time (not logged by fit; never compared)
    assert first_rows == second_rows  # every logged number, step by step, as text
