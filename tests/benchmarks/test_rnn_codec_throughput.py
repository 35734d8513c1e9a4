"""The compressor-throughput benchmark times the builds it names, and ``--quality`` trains what it says."""

from __future__ import annotations

import json

import pytest

from benchmarks import rnn_codec_throughput as bench

pytestmark = pytest.mark.usefixtures("one_thread")


def test_builds_time_each_switch_alone_the_default_and_the_defaults_float32_part():
    config = dict.fromkeys(bench.SWITCHES, False) | {"skip_zero_state": True, "autocast_bf16": True}
    builds = bench.builds(config, alone=("small_map_gemm",))
    assert list(builds) == [
        "eager unfused",
        "small_map_gemm alone",
        "default (skip_zero_state, autocast_bf16)",
        "default, float32 (skip_zero_state)",
    ]
    assert not any(builds["eager unfused"].values())
    assert builds["default, float32 (skip_zero_state)"] == config | {"autocast_bf16": False}
    no_bf16 = bench.builds(config | {"autocast_bf16": False}, alone=())
    assert list(no_bf16) == ["eager unfused", "default (skip_zero_state)"]  # nothing to take away


def test_the_paper_configs_switches_are_read_from_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  init_args:\n    small_map_gemm: true\n")
    assert bench.config_switches(path) == dict.fromkeys(bench.SWITCHES, False) | {"small_map_gemm": True}
    assert set(bench.config_switches(bench.CONFIG)) == set(bench.SWITCHES)


def test_a_tiny_run_times_every_build_and_trains_the_quality_runs(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  init_args:\n    skip_zero_state: true\n    small_map_gemm: true\n")
    result = bench.main(
        ["--width", "0.0625", "--iterations", "2", "--batch-size", "2", "--repeats", "2", "--warmup", "0",
         "--alone", "small_map_gemm", "--config", str(config), "--quality", "4", "--lr", "0.01",
         "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json")]
    )  # fmt: skip
    names = [r["build"] for r in result["training"]]
    assert names == ["eager unfused", "small_map_gemm alone", "default (skip_zero_state, small_map_gemm)"]
    assert all(len(r["step_s"]) == 2 for r in result["training"])
    rows = result["quality"]["rows"]
    assert [r["run"] for r in rows][:2] == ["eager unfused, init seed 0", "eager unfused, init seed 1"]
    assert all(len(r["losses"]) == 4 and len(r["psnr"]) == 2 for r in rows)
    assert rows[0]["losses"] != rows[1]["losses"]  # two initialisations: the spread is real
    assert (tmp_path / "out/rnn_training_quality.png").stat().st_size > 0
    assert json.loads((tmp_path / "r.json").read_text())["quality"]["steps"] == 4
    out = capsys.readouterr().out
    assert "| default (skip_zero_state, small_map_gemm), init seed 0 |" in out and "PSNR after 2 (dB)" in out


def test_bad_arguments_are_refused_before_any_work(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--quality", "3", "--patch-size", "64"])
    assert "32×32" in capsys.readouterr().err
