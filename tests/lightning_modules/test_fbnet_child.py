"""FBNetChild on the CIFAR-10 fixture: built from an architecture file, fit, resume, test metrics."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from cli.lightning_cli import SplitCVCLI
from datamodules.cifar10 import CIFAR10
from datamodules.fixtures import write_cifar10
from lightning_modules.fbnet_child import FBNetChild
from models.fbnet import cifar10_space, write_architecture
from models.fbnet_blocks import InvertedResidual
from models.fbnet_costs import CostSettings, build_cost_table

pytestmark = pytest.mark.usefixtures("one_thread")

ARCH = ["k3_e3", "k5_e1_g2"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An architecture file with the search's cost_table.json beside it, as FBNetSearch writes them."""
    folder = tmp_path_factory.mktemp("search_run")
    space = cifar10_space(width=0.25, stages=[[8, 1, 1], [16, 1, 2]])
    path = write_architecture(folder / "architecture.txt", space, ARCH)
    table = build_cost_table(space, CostSettings(cache_dir=str(folder), warmup=0, repeats=1, progress=False))
    (folder / "cost_table.json").write_text(json.dumps(table.to_json()))
    return path, table


def test_the_child_has_exactly_the_exported_blocks(exported):
    path, _ = exported
    child = FBNetChild(str(path))
    assert child.architecture == ARCH
    blocks = list(child.net.layers)
    assert [type(b) for b in blocks] == [InvertedResidual, InvertedResidual]
    kernels = [[m.kernel_size[0] for m in b.modules() if isinstance(m, torch.nn.Conv2d)] for b in blocks]
    groups = [[m.groups for m in b.modules() if isinstance(m, torch.nn.Conv2d)] for b in blocks]
    assert kernels == [[1, 3, 1], [1, 5, 1]]
    assert groups[1][0] == groups[1][2] == 2  # the g2 variant's 1×1 convs
    mid = blocks[0].body[0][0].out_channels
    assert mid == 3 * blocks[0].body[0][0].in_channels  # expansion 3


def cli(cifar_root, root, run_id, architecture, *extra, command="fit"):
    """One training batch per epoch (18 training images at batch 16, the partial batch dropped)."""
    SplitCVCLI(args=[
        command, "--config", "configs/trainer/debug.yaml",
        "--model", "lightning_modules.fbnet_child.FBNetChild", "--model.architecture", str(architecture),
        "--model.costs.repeats", "2", "--model.costs.warmup", "0",
        "--data", "datamodules.cifar10.CIFAR10", "--data.root", cifar_root, "--data.batch_size", "16",
        "--data.num_workers", "0", "--data.pin_memory", "false", "--data.verify_checksums", "false",
        "--run.root", str(root), "--run.id", run_id, *extra,
    ])  # fmt: skip
    return root / "fb_net_child" / run_id


@pytest.mark.slow
def test_fit_resume_and_test_report_the_table_costs(tmp_path, exported):
    path, table = exported
    cifar_root = str(write_cifar10(tmp_path / "cifar", train_per_batch=4, test_images=8))
    run = cli(cifar_root, tmp_path, "child", path, "--trainer.max_epochs", "1")
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    cli(cifar_root, tmp_path, "child", path, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (first["global_step"], resumed["global_step"]) == (1, 2)
    assert not torch.equal(first["state_dict"]["net.stem.0.weight"], resumed["state_dict"]["net.stem.0.weight"])

    model = FBNetChild(str(path), costs=CostSettings(warmup=0, repeats=2))
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path / "test_run",
    )  # fmt: skip
    dm = CIFAR10(cifar_root, batch_size=4, num_workers=0, pin_memory=False, verify_checksums=False)
    (metrics,) = trainer.test(model, datamodule=dm, ckpt_path=str(run / "checkpoints" / "last.ckpt"), verbose=False)
    # the table costs are the search's (cost_table.json beside the architecture), not re-measured
    latency, energy = table.architecture_cost(ARCH)
    assert (metrics["test/latency_ms"], metrics["test/energy_mj"]) == pytest.approx((latency, energy), rel=1e-6)
    # parameters by hand: stem 3·4·9 + BN 8 = 116; k3_e3 4→2 (mid 12): 48 + 24 + 108 + 24 + 24 + 4 = 232;
    # k5_e1_g2 2→4 (mid 2, group 2): 2 + 4 + 50 + 4 + 4 + 8 = 72; head conv 4→80 + bias = 400;
    # fc on the flattened 80·16·16 map: 20480·10 + 10 = 204,810
    assert metrics["test/params"] == 116 + 232 + 72 + 400 + 204_810
    # accuracy against a direct count over the 8 test images with the same checkpoint
    dm.setup("test")
    net = FBNetChild(str(path))
    net.load_state_dict(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    net.eval()
    with torch.no_grad():
        pairs = [(net(x).argmax(1), y) for x, y in dm.test_dataloader()]
    correct = sum(int((p == y).sum()) for p, y in pairs)
    assert metrics["test/acc_top1"] == correct / 8
    assert metrics["test/images"] == 8 and metrics["test/forward_s"] > 0
    record = json.loads((tmp_path / "test_run" / "results" / "test.json").read_text())
    assert record["method"] == "fbnet_child" and record["architecture"] == str(path.resolve())
    assert record["metrics"]["test/acc_top1"] == metrics["test/acc_top1"] and record["blocks"] == ARCH


BASELINE_OVERRIDES = {
    "mobilenet_v2": ["--model.init_args.baseline_width", "0.25"],
    "resnet18": [],
    "vgg11_bn": ["--model.init_args.baseline_width", "0.0625"],
    "densenet121": ["--model.init_args.baseline_width", "0.25"],
    "darts_v2": ["--model.init_args.baseline_width", "0.25", "--model.init_args.baseline_options", "{cells: 3}"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BASELINE_OVERRIDES))
def test_each_baseline_config_fits_and_tests_on_the_fixture(tmp_path, name):
    cifar_root = str(write_cifar10(tmp_path / "cifar", train_per_batch=2, test_images=4))
    common = [
        "--config", "configs/trainer/debug.yaml", "--config", f"configs/fbnet/baseline_{name}.yaml",
        *BASELINE_OVERRIDES[name], "--model.init_args.measure_ms_per_image", "false",
        "--data.init_args.root", cifar_root, "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
        "--data.init_args.pin_memory", "false", "--data.init_args.verify_checksums", "false",
        "--run.root", str(tmp_path), "--run.id", "b",
    ]  # fmt: skip
    SplitCVCLI(args=["fit", *common])
    run = tmp_path / f"fbnet_baseline_{name}" / "b"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    SplitCVCLI(args=["test", *common, "--ckpt_path", "last"])
    record = json.loads((run / "results" / "test.json").read_text())
    assert record["baseline"] == name and record["metrics"]["test/images"] == 4
    assert record["metrics"]["test/forward_s"] > 0 and record["metrics"]["test/proxy_energy_mj"] > 0
