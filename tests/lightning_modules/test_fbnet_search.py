"""FBNetSearch on the CIFAR-10 fixture: split separation of gradients, costs in the loss, schedule,
run outputs, fit and exact resume through the command line."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from benchmarks.fbnet_report import paper_label
from cli.lightning_cli import SplitCVCLI
from datamodules.cifar10 import CIFAR10
from datamodules.fixtures import write_cifar10
from lightning_modules.fbnet_search import FBNetSearch, gumbel_temperature
from models.fbnet import argmax_architecture, one_hot, read_architecture
from models.fbnet_costs import CostSettings, build_cost_table

pytestmark = pytest.mark.usefixtures("one_thread")

STAGES = [[8, 1, 1], [16, 1, 2]]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> str:
    return str(write_cifar10(tmp_path_factory.mktemp("cifar"), train_per_batch=4, test_images=8))


@pytest.fixture(scope="module")
def costs(tmp_path_factory) -> CostSettings:
    """Settings whose latency cache is filled once for the module."""
    return CostSettings(cache_dir=str(tmp_path_factory.mktemp("latency")), warmup=0, repeats=1, progress=False)


def search(costs: CostSettings, **kwargs) -> FBNetSearch:
    args = {"width": 0.25, "stages": STAGES, "costs": costs, "export_samples": 2, "plot_every_n_epochs": 1, **kwargs}
    return FBNetSearch(**args)


def data(root: str) -> CIFAR10:
    return CIFAR10(root, split="search", batch_size=4, num_workers=0, pin_memory=False, verify_checksums=False)


class GradientRecorder(Callback):
    """At every optimiser step: which optimiser, and whether theta / any weight has a gradient."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, bool, bool]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        theta = pl_module.supernet.theta
        kind = "arch" if any(p is theta for p in optimizer.param_groups[0]["params"]) else "weights"
        weights_grad = any(
            p.grad is not None and p.grad.abs().sum() > 0 for p in pl_module.supernet.weight_parameters()
        )
        self.steps.append((kind, theta.grad is not None and bool(theta.grad.abs().sum() > 0), weights_grad))


def test_each_split_trains_only_its_own_parameters(tmp_path, cifar_root, costs):
    module = search(costs, warmup_epochs=0, loss="fbnet")  # a loss whose weight gradient is never zero
    recorder = GradientRecorder()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path, callbacks=[recorder],
    )  # fmt: skip
    theta_before = module.supernet.theta.detach().clone()
    trainer.fit(module, datamodule=data(cifar_root))
    # global_step counts optimiser steps (manual optimisation): 4 = two training steps.
    # weights step: weights have gradients, theta none; arch step: theta has, weights none
    assert recorder.steps == [("weights", False, True), ("arch", True, False)] * 2
    assert not torch.equal(module.supernet.theta.detach(), theta_before)


def test_warmup_epochs_train_the_weights_only(tmp_path, cifar_root, costs):
    recorder = GradientRecorder()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
        callbacks=[recorder],
    )  # fmt: skip
    module = search(costs, warmup_epochs=1, export_samples=0)
    trainer.fit(module, datamodule=data(cifar_root))
    assert [kind for kind, _, _ in recorder.steps] == ["weights", "weights"]
    assert torch.equal(module.supernet.theta.detach(), torch.zeros_like(module.supernet.theta))


def test_table_latency_of_a_one_hot_architecture_is_the_sum_the_loss_uses(costs):
    module = search(costs)
    table = build_cost_table(module.space, costs)
    module.set_cost_table(table)
    arch = ["k5_e6", "skip"]
    lat, energy = module.expected_costs(one_hot(arch))
    idx = [8 if b == "skip" else 7 for b in arch]  # k5_e6 is candidate 7, skip 8
    by_hand = table.fixed_latency_ms + sum(float(table.latency_ms[i, j]) for i, j in enumerate(idx))
    assert lat.item() == pytest.approx(by_hand, rel=1e-5)
    assert (lat.item(), energy.item()) == pytest.approx(table.architecture_cost(arch), rel=1e-5)
    # and the loss sees exactly that latency (ccel1 at a reached goal: 1 · (log(lat_us^β) + log(e_uJ^β)), β 0.5)
    parts = module.architecture_loss(torch.tensor([0.1]), 1.0, lat.view(1), energy.view(1))
    expected = math.log((by_hand * 1e3) ** 0.5) + math.log((energy.item() * 1e3) ** 0.5)
    assert parts["loss"].item() == pytest.approx(expected, rel=1e-5)
    literal = search(costs, latency_term="power_of_log")
    literal.set_cost_table(table)
    parts = literal.architecture_loss(torch.tensor([0.1]), 1.0, lat.view(1), energy.view(1))
    expected = math.sqrt(math.log(by_hand * 1e3)) + math.sqrt(math.log(energy.item() * 1e3))
    assert parts["loss"].item() == pytest.approx(expected, rel=1e-5)


def _weight_gradients(module: FBNetSearch, images: torch.Tensor, correct: int) -> list[torch.Tensor | None]:
    """Gradients of the weights after one weight step on ``images`` whose labels are the supernet's own
    predictions for the first ``correct`` images and wrong for the rest (same Gumbel draw and dropout:
    the RNG is rewound), so the batch accuracy is exactly ``correct / len(images)``."""
    module.train()
    module.supernet.zero_grad(set_to_none=True)
    state = torch.get_rng_state()
    with torch.no_grad():
        weights = module.supernet.sample_weights(len(images), module.temperature(), module.supernet.theta.detach())
        predictions = module.supernet(images, weights).argmax(1)
    torch.set_rng_state(state)
    labels = predictions.clone()
    labels[correct:] = (labels[correct:] + 1) % 10
    module.manual_backward = lambda loss: loss.backward()  # no Trainer here
    module.weight_step(images, labels)
    return [p.grad for p in module.supernet.weight_parameters()]


@pytest.mark.parametrize(("loss", "goal", "threshold"), [("ccel1", 0.6, 0.5), ("ccel2", 0.5, 0.5)])
def test_ccel_switches_the_weight_gradient_off_once_the_batch_reaches_the_goal(costs, loss, goal, threshold):
    # Algorithm 1: zero once acc >= goal − 0.1 (0.5 here); Algorithm 2: once acc >= goal. 20 images:
    # 10 correct is exactly the threshold, 9 is below it
    torch.manual_seed(0)
    module = search(costs, loss=loss, goal=goal)
    module.set_cost_table(build_cost_table(module.space, costs))
    images = torch.rand(20, 3, 32, 32)
    at = _weight_gradients(module, images, correct=int(threshold * 20))
    assert at and all(g is not None and not g.any() for g in at)  # present, and exactly zero
    below = _weight_gradients(module, images, correct=int(threshold * 20) - 1)
    assert any(g is not None and g.any() for g in below)
    assert module.supernet.theta.grad is None  # theta is detached in the weight step
    # with weight_loss: ce the weights learn from the plain CE whatever the accuracy
    plain = search(costs, loss=loss, goal=goal, weight_loss="ce")
    plain.set_cost_table(build_cost_table(plain.space, costs))
    assert any(g is not None and g.any() for g in _weight_gradients(plain, images, correct=20))


def test_units_too_large_for_the_log_losses_are_refused(costs):
    module = search(costs, latency_unit="s")
    with pytest.raises(ValueError, match="choose a smaller latency_unit"):
        module.set_cost_table(build_cost_table(module.space, costs))
    search(costs, loss="additive", latency_unit="s").set_cost_table(build_cost_table(module.space, costs))


def test_paper_defaults_and_bad_arguments(costs):
    assert search(costs, loss="fbnet").coefficients == {"alpha": 0.5, "beta": 0.6}
    assert search(costs, loss="fbnet", alpha=0.2, beta=0.4).coefficients == {"alpha": 0.2, "beta": 0.4}  # FBNet2
    assert search(costs, loss="additive").coefficients == {"alpha": 0.5, "beta": 0.5, "gamma": 1.5, "delta": 0.5}
    with pytest.raises(ValueError, match="has no gamma"):
        search(costs, loss="fbnet", gamma=1.0)
    with pytest.raises(ValueError, match="goal"):
        search(costs, loss="ccel1", goal=0.05)
    with pytest.raises(ValueError, match="split: search"):
        FBNetSearch._split_batch((torch.zeros(1), torch.zeros(1)))


def test_temperature_follows_fbnet_schedule_rescaled_to_the_run():
    assert gumbel_temperature(0, 90) == 5.0
    assert gumbel_temperature(90, 90) == pytest.approx(5.0 * 0.956**90)
    assert gumbel_temperature(10, 10) == pytest.approx(5.0 * 0.956**90)  # a 10-epoch search ends as cold
    assert gumbel_temperature(5, 10) == pytest.approx(5.0 * 0.956**45)
    assert gumbel_temperature(-2, 10) == 5.0  # warm-up


def cli_fit(root, run_id, cifar_root, costs, *extra):
    """One batch of each split per epoch (14 weight, 4 arch images at batch 8, last partial batch dropped)."""
    SplitCVCLI(args=[
        "fit", "--config", "configs/trainer/debug.yaml",
        "--model", "lightning_modules.fbnet_search.FBNetSearch",
        "--model.width", "0.25", "--model.stages", "[[8, 1, 1], [16, 1, 2]]", "--model.warmup_epochs", "1",
        "--model.costs.cache_dir", costs.cache_dir, "--model.costs.repeats", "1", "--model.costs.warmup", "0",
        "--model.export_samples", "1",
        "--data", "datamodules.cifar10.CIFAR10", "--data.root", cifar_root, "--data.split", "search",
        "--data.batch_size", "8", "--data.num_workers", "0", "--data.pin_memory", "false",
        "--data.verify_checksums", "false",
        "--run.root", str(root), "--run.id", run_id, *extra,
    ])  # fmt: skip
    run = root / "fb_net_search" / run_id
    return run, torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.slow
def test_fit_writes_the_run_outputs_and_resumes_exactly(tmp_path, cifar_root, costs):
    run, full = cli_fit(tmp_path, "full", cifar_root, costs, "--trainer.max_epochs", "2")
    assert (run / "plots" / "probabilities_epoch_001.png").stat().st_size > 0
    assert (run / "cost_table.json").is_file() and (run / "export.json").is_file()
    for name in (
        "architecture.txt",
        "architecture_argmax.txt",
        "architecture_sampled.txt",
        "architectures/epoch_001.txt",
    ):
        space, arch = read_architecture(run / name)
        assert space.num_layers == 2 and len(arch) == 2
    # the export is the argmax of the final theta (export: argmax); the sample is only beside it
    summary = json.loads((run / "export.json").read_text())
    theta = full["state_dict"]["supernet.theta"]
    assert summary["exported"] == "argmax"
    assert (
        read_architecture(run / "architecture.txt")[1]
        == argmax_architecture(theta)
        == summary["argmax"]["architecture"]
    )
    assert read_architecture(run / "architecture_sampled.txt")[1] == summary["best_sampled"]["architecture"]
    part_run, first = cli_fit(tmp_path, "part", cifar_root, costs, "--trainer.max_epochs", "1")
    assert first["global_step"] == 1
    _, resumed = cli_fit(tmp_path, "part", cifar_root, costs, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    # global_step counts optimiser steps: epoch 1 (warm-up) one weight step, epoch 2 one of each
    assert resumed["global_step"] == full["global_step"] == 3
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert not torch.equal(theta, first["state_dict"]["supernet.theta"])  # epoch 2 trained theta; the check can fail
    # a loaded checkpoint evaluates with its own cost table, never a re-measured one (here: one that differs
    # from anything the host would measure, and no latency cache to read)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    checkpoint["state_dict"]["latency_table_ms"] *= 3.0
    torch.save(checkpoint, tmp_path / "scaled.ckpt")
    fresh_costs = CostSettings(cache_dir=str(tmp_path / "empty_cache"), warmup=0, repeats=1, progress=False)
    loaded = FBNetSearch.load_from_checkpoint(tmp_path / "scaled.ckpt", costs=fresh_costs, weights_only=False)
    loaded.setup("validate")
    assert torch.equal(loaded.cost_table.latency_ms.float(), checkpoint["state_dict"]["latency_table_ms"])
    assert loaded.cost_table.latency_source == "checkpoint"


def test_report_names_runs_as_the_paper_does():
    assert [paper_label(n) for n in ("fbnet_s1_l35", "fbnet_s2_normal", "fbnet_s2_l80", "fbnet_fbnet3", "mine")] == [
        "S1-L35",
        "S2-Normal",
        "S2-L80",
        "FBNet3",
        "mine",
    ]
