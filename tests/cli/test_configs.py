"""Every shipped method config composes with every trainer config and parses to the documented classes."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from cli.lightning_cli import SplitCVCLI

REPO = Path(__file__).resolve().parents[2]
METHOD_CONFIGS = sorted(p for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name not in ("trainer", "logger"))
TRAINER_CONFIGS = sorted((REPO / "configs" / "trainer").glob("*.yaml"))


@pytest.mark.parametrize("config", METHOD_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_method_config_parses_and_prints(config, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    trainer = "configs/trainer/gpu.yaml" if config.stem != "demo" else "configs/trainer/cpu.yaml"
    with pytest.raises(SystemExit) as done:
        SplitCVCLI(args=["fit", "--config", trainer, "--config", str(config), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    written = yaml.safe_load(config.read_text())
    assert printed["model"]["class_path"] == written["model"]["class_path"]
    assert printed["data"]["class_path"] == written["data"]["class_path"]
    for key, value in written["model"]["init_args"].items():
        assert printed["model"]["init_args"][key] == value, key


@pytest.mark.parametrize("trainer", TRAINER_CONFIGS, ids=lambda p: p.stem)
def test_trainer_configs_compose_with_the_demo(trainer, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        SplitCVCLI(
            args=["fit", "--config", str(trainer), "--config", "configs/rnn_compressor/demo.yaml", "--print_config"]
        )
    printed = yaml.safe_load(capsys.readouterr().out)
    demo = yaml.safe_load((REPO / "configs/rnn_compressor/demo.yaml").read_text())
    # the method config wins over hardware configs; debug.yaml's limits win wherever it stands
    expected = yaml.safe_load(trainer.read_text())["trainer"] if trainer.stem == "debug" else demo["trainer"]
    assert printed["trainer"]["max_epochs"] == expected["max_epochs"]


# Every CPU demo config builds its model and data and runs fit → test → predict for one batch (the
# --print_config test above does not build the model). Minutes in all (464 s for six of them on the shared
# 2-core machine at load 17), so not in `make test`: `pytest -m demo_configs tests/cli/test_configs.py`. The demos that need another demo's output
# (bit_search/demo and demo_finetune: a pretrained checkpoint and search.json; fbnet/demo_child: a searched
# architecture) are run as parts of their chains by `make demo`, not here.
CHAINED = {"bit_search/demo", "bit_search/demo_finetune", "fbnet/demo_child"}
DEMOS = sorted(p for p in (REPO / "configs").glob("*/demo*.yaml") if f"{p.parent.name}/{p.stem}" not in CHAINED)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> dict[str, str]:
    """The fixtures the demos read from data/fixtures/, written small, and a compressor at the demos' width."""
    from datamodules.fixtures import write_cifar10, write_imagenet, write_voc
    from models.rnn_codec import RNNCodec

    root = tmp_path_factory.mktemp("demo_data")
    torch.manual_seed(0)
    compressor = root / "compressor.ckpt"
    codec = RNNCodec(width=0.125)
    torch.save({"state_dict": {f"codec.{k}": v for k, v in codec.state_dict().items()}}, compressor)
    return {
        "imagenet": str(write_imagenet(root / "imagenet", train_per_wnid=1, val_per_wnid=1, image_size=(40, 48))),
        "voc": str(write_voc(root / "voc", trainval_2007=2, test_2007=2, trainval_2012=2, image_size=(64, 80))),
        "cifar10": str(write_cifar10(root / "cifar10", train_per_batch=4, test_images=4)),
        "compressor": str(compressor),
        "cache": str(root / "cache"),
    }


def _data_args(config: Path, data: dict[str, str]) -> list[str]:
    written = yaml.safe_load(config.read_text())
    data_class = written["data"]["class_path"].rsplit(".", 1)[-1]
    args = ["--data.init_args.num_workers", "0"]
    if data_class == "ImageNetSubset":
        args += [
            "--data.init_args.root",
            data["imagenet"],
            "--data.init_args.class_list",
            f"{data['imagenet']}/class_list.txt",
        ]
    elif data_class == "VOC":
        args += ["--data.init_args.root", data["voc"]]
    elif data_class == "CIFAR10":
        args += ["--data.init_args.root", data["cifar10"]]
    elif data_class == "SampleImagesDataModule":
        args += ["--data.init_args.patches_per_image", "2", "--data.init_args.val_max_side", "64"]
    model_args = written["model"]["init_args"]
    if model_args.get("init_compressor_from"):
        args += ["--model.init_args.init_compressor_from", data["compressor"]]
    if "decoded_cache_dir" in model_args:
        args += ["--model.init_args.decoded_cache_dir", data["cache"], "--model.init_args.cache_workers", "0"]
    return args


@pytest.mark.demo_configs
@pytest.mark.parametrize("config", DEMOS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_demo_config_fits_tests_and_predicts_one_batch(config, demo_data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cli = SplitCVCLI(
        args=[
            "fit",
            "--config",
            str(config),
            "--config",
            "configs/trainer/debug.yaml",
            "--trainer.limit_train_batches",
            "1",
            "--run.root",
            str(tmp_path),
            "--run.id",
            "one",
            *_data_args(config, demo_data),
        ]
    )
    assert cli.trainer.global_step >= 1
    assert (Path(cli.trainer.default_root_dir) / "checkpoints" / "last.ckpt").is_file()
    tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    assert tested and all(torch.isfinite(torch.tensor(v)) for v in tested[0].values())
    module = type(cli.model)
    if module.predict_step is L.LightningModule.predict_step and module.forward is L.LightningModule.forward:
        return  # a search (FBNetSearch) has nothing to predict
    predictions = cli.trainer.predict(cli.model, datamodule=cli.datamodule)
    assert predictions
