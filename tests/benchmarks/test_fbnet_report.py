"""benchmarks/fbnet_report.py: the demo chain (search → child → test) gives a row with every column filled,
whatever the logger; metrics are read from the results record, the CSV logs or a W&B summary; the paper's
units (seconds and joules for the 10,000 test images); baseline rows; Figures 6/7's MobileNetV2 row."""

from __future__ import annotations

import json

import pytest

from benchmarks import fbnet_report
from benchmarks.fbnet_report import COLUMNS, collect, read_test_metrics, write_report
from cli.lightning_cli import SplitCVCLI
from datamodules.fixtures import write_cifar10
from models.fbnet import cifar10_space, write_architecture
from models.fbnet_baselines import mobilenet_v2_blocks

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = ["--data.init_args.batch_size", "8", "--data.init_args.num_workers", "0"]


@pytest.mark.slow
def test_the_demo_chain_fills_every_column(tmp_path):
    root = str(write_cifar10(tmp_path / "cifar", train_per_batch=4, test_images=8))
    common = ["--config", "configs/trainer/debug.yaml", "--data.init_args.root", root, *DATA,
              "--run.root", str(tmp_path / "runs"), "--run.id", "demo", "--trainer.max_epochs", "1"]  # fmt: skip
    # the demo search as shipped (its latency table from configs/fbnet/demo_latency_table.json), one epoch
    SplitCVCLI(args=["fit", "--config", "configs/fbnet/demo_search.yaml", *common,
                     "--model.init_args.warmup_epochs", "0", "--model.init_args.export_samples", "1"])  # fmt: skip
    search = tmp_path / "runs" / "fbnet_demo_search" / "demo"
    assert "demo_latency_table.json" in json.loads((search / "cost_table.json").read_text())["latency_source"]
    child = ["--config", "configs/fbnet/demo_child.yaml", *common,
             "--model.init_args.architecture", str(search / "architecture.txt"),
             "--model.init_args.costs.repeats", "2", "--model.init_args.costs.warmup", "0"]  # fmt: skip
    SplitCVCLI(args=["fit", *child])
    SplitCVCLI(args=["test", *child, "--ckpt_path", "last"])  # logger: false; the results record carries it
    (row,) = collect(tmp_path / "runs")
    empty = [c for c in COLUMNS if row[c] is None and not c.startswith("paper_")]
    assert not empty, f"columns left blank: {empty}"
    record = json.loads((tmp_path / "runs" / "fbnet_demo_child" / "demo" / "results" / "test.json").read_text())
    assert row["acc_pct"] == pytest.approx(100 * record["metrics"]["test/acc_top1"])
    assert row["child"].endswith("fbnet_demo_child/demo") and row["model"] == "fbnet_demo_search"
    assert write_report([row], tmp_path / "report")["md"].read_text().count("\n") == 3


def _search_run(runs, name="fbnet_s1_l100", latency_ms=0.635, energy_mj=0.346):
    """A finished search as FBNetSearch leaves it: export.json and architecture.txt (all-skip, Table 1)."""
    run = runs / name / "1"
    arch = ["skip"] * 22
    write_architecture(run / "architecture.txt", cifar10_space(), arch)
    row = {"architecture": arch, "latency_ms": latency_ms, "energy_mj": energy_mj, "val_acc": 0.5}
    (run / "export.json").write_text(json.dumps({"loss": "ccel1", "goal": 1.0, "exported": "argmax", "argmax": row,
                                                  "best_sampled": row}))  # fmt: skip
    return run


def test_the_papers_units_seconds_and_joules_for_10000_images(tmp_path):
    # S1-L100's row: 6.35 s and 3.46 J for the 10,000 test images = 0.635 ms and 0.346 mJ per image
    run = _search_run(tmp_path)
    child = tmp_path / "fbnet_s1_l100_child" / "1"
    (child / "results").mkdir(parents=True)
    metrics = {"test/acc_top1": 0.9, "test/forward_s": 0.0635, "test/images": 100.0, "test/ms_per_image": 0.635,
               "test/params": 193_290.0}  # fmt: skip
    (child / "results" / "test.json").write_text(json.dumps({"method": "fbnet_child", "architecture":
                                                             str((run / "architecture.txt").resolve()),
                                                             "baseline": None, "metrics": metrics}))  # fmt: skip
    (row,) = collect(tmp_path)
    assert row["model"] == "S1-L100" and row["child"] == str(child)
    for column in ("measured_s_10k", "batch1_s_10k", "table_s_10k"):
        assert row[column] == pytest.approx(6.35)
    assert row["energy_j_10k"] == pytest.approx(3.46) and row["acc_pct"] == pytest.approx(90.0)
    assert (row["paper_acc_pct"], row["paper_s_10k"], row["paper_j_10k"]) == (90.0, 6.35, 3.46)
    assert row["params_m"] == pytest.approx(0.19329)


def test_metrics_come_from_csv_or_wandb_when_there_is_no_results_record(tmp_path):
    csv_run = tmp_path / "a"
    (csv_run / "csv" / "test").mkdir(parents=True)
    (csv_run / "csv" / "test" / "metrics.csv").write_text("epoch,test/acc_top1,test/forward_s\n0,0.25,1.5\n")
    metrics, source, _ = read_test_metrics(csv_run)
    assert metrics == {"test/acc_top1": 0.25, "test/forward_s": 1.5} and source.endswith("metrics.csv")
    wandb_run = tmp_path / "b"
    (wandb_run / "wandb" / "offline-run-x" / "files").mkdir(parents=True)
    summary = {"test/acc_top1": 0.75, "test/images": 8, "_step": 3, "trainer/global_step": 2}
    (wandb_run / "wandb" / "offline-run-x" / "files" / "wandb-summary.json").write_text(json.dumps(summary))
    metrics, source, _ = read_test_metrics(wandb_run)
    assert metrics == {"test/acc_top1": 0.75, "test/images": 8.0} and "wandb-summary" in source
    # a search whose child was logged by CSV only, named as the SLURM array names it
    _search_run(tmp_path / "runs", "fbnet_s2_l35")
    (tmp_path / "runs" / "fbnet_s2_l35_child" / "1").mkdir(parents=True)
    (tmp_path / "runs" / "fbnet_s2_l35_child" / "1" / "csv").symlink_to(csv_run / "csv")
    (row,) = collect(tmp_path / "runs")
    assert row["acc_pct"] == 25.0 and row["model"] == "S2-L35" and row["measured_s_10k"] is None


def test_baseline_rows_and_the_mobilenet_v2_row_of_figures_6_and_7(tmp_path, monkeypatch):
    run = tmp_path / "fbnet_baseline_mobilenet_v2" / "1"
    (run / "results").mkdir(parents=True)
    metrics = {"test/acc_top1": 0.5, "test/forward_s": 2.0, "test/images": 1000.0, "test/proxy_energy_mj": 1.0,
               "test/params": 2_236_682.0}  # fmt: skip
    (run / "results" / "test.json").write_text(json.dumps({"method": "fbnet_child", "architecture": None,
                                                           "baseline": "mobilenet_v2", "baseline_width": 1.0,
                                                           "metrics": metrics}))  # fmt: skip
    _search_run(tmp_path, "fbnet_s1_l35")
    _search_run(tmp_path, "fbnet_fbnet3")
    rows = collect(tmp_path)
    baseline = next(r for r in rows if r["model"] == "MobileNetV2")
    assert baseline["measured_s_10k"] == pytest.approx(20.0) and baseline["energy_j_10k"] == pytest.approx(10.0)
    assert baseline["energy_source"] == "MAC + bytes proxy" and baseline["paper_s_10k"] == 40.1
    drawn = {}
    monkeypatch.setattr(
        fbnet_report, "plot_chosen_blocks", lambda archs, path, title: drawn.setdefault(path.stem, archs) and path
    )
    write_report(rows, tmp_path / "report")
    for figure in ("chosen_blocks_s1", "chosen_blocks_s2"):
        first, *others = drawn[figure].items()
        assert first[0].startswith("MobileNetV2") and first[1] == mobilenet_v2_blocks() and others


def test_a_truncated_results_record_names_its_file(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "test.json").write_text('{"metrics": {"test/acc')
    with pytest.raises(ValueError, match="results/test.json"):
        read_test_metrics(tmp_path)
