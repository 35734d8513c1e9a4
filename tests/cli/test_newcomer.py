"""A README command as a newcomer runs it: no WANDB_MODE, no W&B key, an empty HOME.

The test suite itself runs with ``WANDB_MODE=disabled`` (``make test``, tests/conftest.py), which is exactly
what hid the failure of every README ``splitcv fit`` on a machine without a W&B account: these tests remove
every W&B variable from the child's environment and point HOME at an empty folder.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def newcomer_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(home)
    env.pop("XDG_CONFIG_HOME", None)
    env.pop("NETRC", None)
    return env


def splitcv_command() -> list[str]:
    """The ``splitcv`` console script next to this interpreter (what ``make`` installs), else ``python train.py``."""
    script = Path(sys.executable).with_name("splitcv")
    return [str(script)] if script.is_file() else [sys.executable, str(REPO / "train.py")]


@pytest.mark.slow
def test_readme_fit_without_wandb_account_logs_offline_into_the_run(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = newcomer_env(home)
    subprocess.run(
        [sys.executable, "-m", "datamodules.fixtures", "voc", "data/fixtures/voc"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    # The README's detector demo command, shortened to one batch (the environment is what is under test).
    command = [
        *splitcv_command(), "fit",
        "--config", str(REPO / "configs/trainer/cpu.yaml"), "--config", str(REPO / "configs/detector/demo.yaml"),
        "--run.id", "newcomer", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No API key" not in result.stderr
    run_dir = tmp_path / "runs" / "detector_demo" / "newcomer"
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1, sorted(p.name for p in run_dir.rglob("*"))
    assert list(offline_runs[0].glob("*.wandb")), "the offline run holds no W&B log"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "anonymous setting has no effect" not in result.stderr + result.stdout
