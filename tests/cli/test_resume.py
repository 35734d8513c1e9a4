"""Resume: exact at an epoch boundary; mid-epoch continues at the same global step."""

import torch

from cli.lightning_cli import SplitCVCLI


def fit(args, root, run_id, *extra):
    SplitCVCLI(args=["fit", *args, "--run.root", str(root), "--run.id", run_id, *extra])
    return torch.load(root / "rnn_compressor" / run_id / "checkpoints" / "last.ckpt", weights_only=True)


def test_resume_at_epoch_boundary_ends_with_the_same_weights(tmp_path, tiny_compressor_args):
    args = [*tiny_compressor_args, "--trainer.limit_train_batches", "3"]
    full = fit(args, tmp_path, "full", "--trainer.max_epochs", "2")
    first = fit(args, tmp_path, "part", "--trainer.max_epochs", "1")
    assert first["global_step"] == 3
    resumed = fit(args, tmp_path, "part", "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert resumed["global_step"] == full["global_step"] == 6
    assert resumed["state_dict"].keys() == full["state_dict"].keys()
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    # and the comparison can fail: the first half alone differs from the full run
    assert not all(torch.equal(v, first["state_dict"][k]) for k, v in full["state_dict"].items())


def test_resume_mid_epoch_continues_at_the_same_global_step(tmp_path, tiny_compressor_args):
    args = [
        *tiny_compressor_args,
        "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "0",
        "--trainer.max_epochs", "-1", "--run.checkpoint_every_n_steps", "1",
    ]  # fmt: skip
    stopped = fit(args, tmp_path, "mid", "--trainer.max_steps", "3")
    assert stopped["global_step"] == 3
    resumed = fit(args, tmp_path, "mid", "--trainer.max_steps", "8", "--ckpt_path", "last")
    assert resumed["global_step"] == 8
    progress = resumed["loops"]["fit_loop"]["epoch_loop.automatic_optimization.optim_progress"]
    assert progress["optimizer"]["step"]["total"]["completed"] == 8
