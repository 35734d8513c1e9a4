"""Every shipped method config composes with every trainer config and parses to the documented classes."""

from __future__ import annotations

from pathlib import Path

import pytest
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
