"""`splitcv search` runs through fit's run-directory, run-lock and early-failure clean-up code: it refuses an
existing run, refuses a run another live process holds, removes what it wrote when it fails before its first
batch; a whole search on the ImageNet fixture, then a resume that reads every table back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import train
from cli.run_lock import RunLock, RunLockedError
from lightning_modules.bit_search_cli import search_main
from lightning_modules.bit_search_tables import SearchStateError
from models import bitserial  # branch perf's kernel (kernel_threads) is what the whole-network timer runs

REPO = Path(__file__).resolve().parents[2]


def _args(root: Path, run_root: Path, **overrides) -> list[str]:
    settings = {
        "model.init_args.arch": "toy3", "model.init_args.width": "4", "model.init_args.init_from": "null",
        "model.init_args.bases": "1", "model.init_args.decomposition": "greedy", "model.init_args.max_bits": "3",
        "model.init_args.allowed_drops": "[5.0, 50.0]", "model.init_args.uniform_bits": "[2, 3]",
        "model.init_args.ms_repeats": "1", "model.init_args.cost_image_size": "16",
        "data.init_args.root": str(root), "data.init_args.class_list": str(root / "class_list.txt"),
        "data.init_args.image_size": "16", "trainer.enable_progress_bar": "false", "run.root": str(run_root),
        "run.id": "cli", "model.init_args.network_ms": str(hasattr(bitserial, "kernel_threads")).lower(),
    } | overrides  # fmt: skip
    args = ["--config", str(REPO / "configs/trainer/cpu.yaml"), "--config", str(REPO / "configs/bit_search/demo.yaml")]
    for key, value in settings.items():
        args += [f"--{key}", value]
    return args


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    from datamodules.fixtures import write_imagenet

    return write_imagenet(tmp_path_factory.mktemp("imagenet"), train_per_wnid=1, val_per_wnid=2, image_size=(24, 24))


def test_search_refuses_an_existing_run(imagenet, tmp_path):
    run_dir = tmp_path / "runs" / "bit_search_demo" / "cli"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("a fit's run\n")
    with pytest.raises(SearchStateError, match="already holds a run"):
        search_main(_args(imagenet, tmp_path / "runs"))
    with pytest.raises(SystemExit, match="splitcv: error: .*already holds a run"):
        train.main(["search", *_args(imagenet, tmp_path / "runs")])
    with pytest.raises(SearchStateError, match="nothing to resume"):
        search_main([*_args(imagenet, tmp_path / "runs"), "--resume", "true"])
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]  # nothing written, nothing removed


def test_a_second_live_search_of_the_same_run_is_refused(imagenet, tmp_path):
    run_dir = tmp_path / "runs" / "bit_search_demo" / "cli"
    with RunLock(run_dir):  # a live process (this one) holds the run
        with pytest.raises(RunLockedError, match="is in use by pid"):
            search_main(_args(imagenet, tmp_path / "runs"))
        assert sorted(p.name for p in run_dir.iterdir()) == ["run.lock"]


def test_an_early_failure_removes_what_the_search_wrote(imagenet, tmp_path, capsys):
    missing = tmp_path / "no_such.ckpt"
    with pytest.raises((FileNotFoundError, ValueError), match="checkpoint not found: .*no_such.ckpt"):
        search_main(_args(imagenet, tmp_path / "runs", **{"model.init_args.init_from": str(missing)}))
    assert not (tmp_path / "runs" / "bit_search_demo").exists()  # run directory (config, lock) removed
    assert "search failed before its first batch; removed what it wrote" in capsys.readouterr().err


@pytest.mark.slow
def test_search_on_the_imagenet_fixture_then_resume(imagenet, tmp_path):
    args = _args(imagenet, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "bit_search_demo" / "cli"
    seen = {}

    class LockSeen:  # the run lock is held while the search runs
        def __init__(self):
            import lightning as L

            class CB(L.Callback):
                def on_validation_start(self, trainer, pl_module):
                    seen["lock"] = json.loads((run_dir / "run.lock").read_text())["pid"]

            self.cb = CB()

    import os

    from lightning_modules import bit_search_cli

    original = bit_search_cli.execute
    probe = LockSeen().cb
    bit_search_cli.execute = lambda parser, cfg, rd, callbacks, save_config=True: original(
        parser, cfg, rd, [*callbacks, probe], save_config
    )
    try:
        summary = search_main(args)
    finally:
        bit_search_cli.execute = original
    assert seen["lock"] == os.getpid() and not (run_dir / "run.lock").exists()  # held during, released after
    out = run_dir / "search"
    assert json.loads((out / "search.json").read_text())["searched"] == summary["searched"]
    assert summary["images"] == 20 and len(summary["uniform"]) == 2
    assert all(r["ms"] is not None for r in summary["uniform"])  # the bit-serial kernel timed every layer
    assert (run_dir / "search_config.yaml").is_file()
    resumed = search_main([*args, "--resume", "true"])  # all tables read back: the same choices
    assert [(r["bits"], r["accuracy"]) for r in resumed["searched"]] == [
        (r["bits"], r["accuracy"]) for r in summary["searched"]
    ]
    assert (run_dir / "search_config.resume-1.yaml").is_file()
    # resuming with another image size: the data fingerprint differs, refused naming the state file
    with pytest.raises(SearchStateError, match=r"state\.json holds a search with other settings \(data\)"):
        search_main([*_args(imagenet, tmp_path / "runs", **{"data.init_args.image_size": "20"}), "--resume", "true"])


def test_a_requeued_slurm_search_resumes_by_itself(tmp_path, monkeypatch):
    from cli.run_directory import RunConfig
    from lightning_modules.bit_search_cli import search_run_dir

    run = RunConfig(root=str(tmp_path), name="bit_search_demo")
    saved = tmp_path / "bit_search_demo" / "slurm-77" / "search" / "state.json"
    saved.parent.mkdir(parents=True)
    saved.write_text("{}")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert search_run_dir(run, resume=False) == (saved.parent.parent, True)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the same job id started afresh: not a requeue
    with pytest.raises(SearchStateError, match="already holds a run"):
        search_run_dir(run, resume=False)
    saved.unlink()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # requeued before its first save: starts afresh, as fit does
    assert search_run_dir(run, resume=False) == (saved.parent.parent, False)
