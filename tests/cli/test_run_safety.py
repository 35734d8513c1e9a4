"""A run never loses work (issue 7): a run id is one run, `--ckpt_path last` never starts silently from
scratch, the fit's config is never overwritten, an early failure leaves nothing behind, a fine-tuned run
never needs its parent file again, and debug.yaml limits a run wherever it is given."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cli.lightning_cli import NothingToResumeError, RunExistsError, SplitCVCLI, debug_configs_last
from cli.run_lock import LOCK_FILE, RunLockedError
from lightning_modules.rnn_compressor import RNNCompressor

REPO = Path(__file__).resolve().parents[2]
FAST = ["--trainer.limit_val_batches", "0", "--trainer.enable_model_summary", "false"]


@pytest.fixture(autouse=True)
def outside_slurm(monkeypatch):
    """Run ids and `last` follow the SLURM job inside one (e.g. `srun make test`); these tests are about the rest."""
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)


def cli(subcommand: str, args: list[str], root: Path, *extra: str) -> SplitCVCLI:
    return SplitCVCLI(args=[subcommand, *args, "--run.root", str(root), *extra])


def files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """A run root holding one finished tiny fit, ``rnn_compressor/X`` (copy it before changing it)."""
    from tests.conftest import TINY_COMPRESSOR

    root = tmp_path_factory.mktemp("fitted")
    cli("fit", [*TINY_COMPRESSOR, *FAST], root, "--run.id", "X")
    return root


@pytest.fixture
def runs(fitted, tmp_path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(fitted, root)
    return root


def test_fit_into_an_existing_run_refuses_before_any_work(runs, tiny_compressor_args):
    run_dir = runs / "rnn_compressor" / "X"
    before = files(run_dir)
    with pytest.raises(RunExistsError, match=r"(?s)X already holds a run.*--ckpt_path last.*--run.id"):
        cli("fit", tiny_compressor_args, runs, "--run.id", "X")
    assert files(run_dir) == before  # the first run's checkpoint and config are untouched


def test_a_live_process_holds_the_run_and_a_dead_ones_lock_is_taken_over(tmp_path, tiny_compressor_args, capsys):
    run_dir = tmp_path / "rnn_compressor" / "L"
    run_dir.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from cli.run_lock import _process_start_time

        holder = {"host": os.uname().nodename, "pid": sleeper.pid, "start_time": _process_start_time(sleeper.pid)}
        (run_dir / LOCK_FILE).write_text(json.dumps({**holder, "command": "splitcv fit (the other one)"}))
        with pytest.raises(RunLockedError, match=rf"in use by pid {sleeper.pid}.*the other one"):
            cli("fit", [*tiny_compressor_args, *FAST], tmp_path, "--run.id", "L", "--trainer.max_steps", "1")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not list(run_dir.glob("*.yaml")) and not (run_dir / "checkpoints").exists()  # nothing was written
    cli("fit", [*tiny_compressor_args, *FAST], tmp_path, "--run.id", "L", "--trainer.max_steps", "1")
    assert f"process {sleeper.pid} on" in capsys.readouterr().err  # the stale lock was reported and taken over
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / LOCK_FILE).exists()


def test_ckpt_path_last_with_nothing_to_resume_is_an_error_unless_opted_in(tmp_path, tiny_compressor_args):
    with pytest.raises(NothingToResumeError, match=r"no checkpoint in .*rnn_compressor.*resume_if_present"):
        cli("fit", tiny_compressor_args, tmp_path, "--ckpt_path", "last")
    with pytest.raises(NothingToResumeError, match=r"no checkpoint in .*rnn_compressor/Y"):
        cli("test", tiny_compressor_args, tmp_path, "--run.id", "Y", "--ckpt_path", "last")
    assert not (tmp_path / "rnn_compressor").exists()
    cli("fit", [*tiny_compressor_args, *FAST], tmp_path, "--ckpt_path", "last", "--run.resume_if_present", "true")
    (run_dir,) = (tmp_path / "rnn_compressor").iterdir()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_later_commands_write_their_own_config_beside_the_fits(runs, tiny_compressor_args, capsys):
    run_dir = runs / "rnn_compressor" / "X"
    fit_config = (run_dir / "config.yaml").read_bytes()
    cli("test", tiny_compressor_args, runs, "--ckpt_path", "last")  # the newest run of that name: X
    assert f"test of {run_dir / 'checkpoints' / 'last.ckpt'}" in capsys.readouterr().err
    cli(
        "fit", [*tiny_compressor_args, *FAST], runs, "--run.id", "X", "--ckpt_path", "last", "--trainer.max_epochs", "2"
    )
    assert (run_dir / "config.yaml").read_bytes() == fit_config
    assert {p.name for p in run_dir.glob("config*.yaml")} == {"config.yaml", "config.test.yaml", "config.fit-2.yaml"}
    assert yaml.safe_load((run_dir / "config.fit-2.yaml").read_text())["trainer"]["max_epochs"] == 2
    assert yaml.safe_load(fit_config)["trainer"]["max_epochs"] == 1


@pytest.mark.slow  # W&B offline start-up
def test_a_run_that_fails_before_its_first_step_leaves_nothing_behind(runs, tiny_compressor_args, monkeypatch):
    missing = ["--data", "datamodules.image_folder_patches.ImageFolderPatches", "--data.root", str(runs / "nowhere")]
    missing += ["--data.num_workers", "0"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cli("fit", [*tiny_compressor_args, *missing], runs, "--run.id", "new")
    assert not (runs / "rnn_compressor" / "new").exists()
    run_dir = runs / "rnn_compressor" / "X"  # a failed test of an existing run removes only what it wrote
    before = files(run_dir)
    monkeypatch.setenv("WANDB_MODE", "offline")  # the W&B run starts before the data is read
    wandb = ["--trainer.logger", "lightning.pytorch.loggers.WandbLogger"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cli("test", [*tiny_compressor_args, *missing, *wandb], runs, "--ckpt_path", "last")
    assert files(run_dir) == before and not (run_dir / "wandb").exists()


def test_a_fine_tuned_run_never_needs_its_parent_file_again(runs, tiny_compressor_args, tmp_path):
    parent = tmp_path / "parent.ckpt"
    shutil.copy(runs / "rnn_compressor" / "X" / "checkpoints" / "last.ckpt", parent)
    frozen = [*tiny_compressor_args, *FAST, "--model.lr", "0", "--model.init_from", str(parent)]
    cli("fit", frozen, runs, "--run.id", "child")  # lr 0: the weights stay the parent's
    child_last = runs / "rnn_compressor" / "child" / "checkpoints" / "last.ckpt"
    child, source = (torch.load(p, weights_only=True) for p in (child_last, parent))
    for key, value in source["state_dict"].items():
        assert torch.equal(child["state_dict"][key], value), key
    assert child["parent"]["path"] == str(parent.resolve())
    assert child["parent"]["summary"].startswith(f"initialised {len(source['state_dict'])} tensors")
    assert yaml.safe_load((child_last.parents[1] / "config.yaml").read_text())["run"]["parent"] == str(parent)

    parent.unlink()  # resume, test and load_from_checkpoint read only the run's own checkpoint
    cli("fit", frozen, runs, "--run.id", "child", "--ckpt_path", "last", "--trainer.max_epochs", "2")
    resumed = torch.load(child_last, weights_only=True)
    assert resumed["global_step"] == 4 and resumed["parent"] == child["parent"]
    cli("test", frozen, runs, "--run.id", "child", "--ckpt_path", "last")
    RNNCompressor.load_from_checkpoint(child_last)


def test_debug_config_limits_the_run_wherever_it_stands(capsys):
    demo = ["--config", "configs/rnn_compressor/demo.yaml"]
    for order in (["--config", "configs/trainer/debug.yaml", *demo], [*demo, "--config=configs/trainer/debug.yaml"]):
        with pytest.raises(SystemExit):
            SplitCVCLI(args=["fit", *order, "--print_config"])
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["trainer"]["max_epochs"] == 1 and printed["trainer"]["limit_train_batches"] == 2
    args = ["fit", "--config", "a/debug.yaml", "--trainer.max_epochs", "3", "--config", "m.yaml", "--x", "1"]
    assert debug_configs_last(args) == [
        "fit", "--trainer.max_epochs", "3", "--config", "m.yaml", "--config", "a/debug.yaml", "--x", "1"
    ]  # fmt: skip


def test_ckpt_path_help_says_what_last_means_here(capsys):
    for subcommand, meaning in (("fit", "Resume this run"), ("test", "Checkpoint to evaluate")):
        with pytest.raises(SystemExit):
            SplitCVCLI(args=[subcommand, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        help_text = text.split("--ckpt_path CKPT_PATH")[-1].split("(type:")[0]  # the option's own help
        assert meaning in help_text and "newest complete checkpoint" in help_text and "an error" in help_text
        assert "save_last" not in help_text and '"hpc"' not in help_text  # not Lightning's docstring
