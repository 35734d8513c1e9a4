"""Run-directory rules: which checkpoint a restarted job resumes from, and the SLURM run id."""

import os
import time

import torch

from cli.run_directory import is_complete_checkpoint, newest_checkpoint, slurm_run_id, snake_case


def save(path, step):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step}, path)
    return path


def test_newest_complete_checkpoint_wins_and_truncated_ones_are_skipped(tmp_path, capsys):
    assert newest_checkpoint(tmp_path) is None
    hpc = save(tmp_path / "hpc_ckpt_1.ckpt", 4)
    last = save(tmp_path / "checkpoints" / "last.ckpt", 6)
    now = time.time()
    os.utime(hpc, (now - 10, now - 10))
    assert newest_checkpoint(tmp_path) == last
    os.utime(hpc, (now + 10, now + 10))
    assert newest_checkpoint(tmp_path) == hpc

    data = hpc.read_bytes()
    hpc.write_bytes(data[: len(data) // 2])  # killed while saving
    os.utime(hpc, (now + 20, now + 20))
    assert not is_complete_checkpoint(hpc) and is_complete_checkpoint(last)
    assert newest_checkpoint(tmp_path) == last
    assert f"skipping truncated checkpoint {hpc}" in capsys.readouterr().err


def test_slurm_run_id_is_stable_per_job_and_array_task():
    assert slurm_run_id({}) is None
    assert slurm_run_id({"SLURM_JOB_ID": "17"}) == "slurm-17"
    array = {"SLURM_JOB_ID": "18", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "3"}
    assert slurm_run_id(array) == "slurm-10_3"


def test_snake_case_of_model_classes():
    assert snake_case("RNNCompressor") == "rnn_compressor"
    assert snake_case("CodeRecognition") == "code_recognition"
