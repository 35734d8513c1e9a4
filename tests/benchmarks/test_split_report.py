"""One results schema for every method, and the split report that reads it: tiny fits of each method on the
fixtures, then the report's rows checked against the records the runs wrote."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from benchmarks.split_report import main
from callbacks.results_record import RECORD_KEYS, SCHEMA, read_record
from datamodules.fixtures import write_imagenet
from datamodules.imagenet_subset import ImageNetSubset
from lightning_modules.code_recognition import CodeRecognition
from lightning_modules.compressed_image_recognition import CompressedImageRecognition
from lightning_modules.rnn_compressor import RNNCompressor
from lightning_modules.shared_trunk import SharedTrunkTask
from tests.lightning_modules.tiny_trainer import trainer

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTH = 0.0625


def imagenet(root: str) -> ImageNetSubset:
    return ImageNetSubset(
        root, class_list=f"{root}/class_list.txt", image_size=32, batch_size=10, num_workers=0, pin_memory=False
    )


def params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run directories of the four methods (fit one step, then test), and the models that made them."""
    root = tmp_path_factory.mktemp("split_runs")
    imagenet_root = str(write_imagenet(root / "imagenet", train_per_wnid=1, val_per_wnid=1, image_size=(40, 48)))
    torch.manual_seed(0)
    compressor = RNNCompressor(width=WIDTH, iterations=2)
    images = [(torch.rand(3, 32, 32), f"im{i}") for i in range(2)]
    fit = trainer(root / "rnn_compressor", max_epochs=1)
    fit.fit(compressor, DataLoader(torch.rand(2, 3, 32, 32), batch_size=2), DataLoader(images, batch_size=2))
    fit.test(compressor, DataLoader(images, batch_size=2), verbose=False)
    ckpt = root / "rnn_compressor" / "checkpoints" / "last.ckpt"

    decoded = {
        "num_classes": 10,
        "train_on": "compressed",
        "eval_on": "compressed",
        "iterations": 1,
        "codec_width": WIDTH,
        "decoded_cache_dir": str(root / "cache"),
        "cache_workers": 0,
        "arch": "shufflenet_v2_x0_5",
    }
    models = {
        "decoded_rnn": CompressedImageRecognition(channel="rnn", init_compressor_from=str(ckpt), **decoded),
        "decoded_jpeg": CompressedImageRecognition(channel="jpeg", quality=30, **decoded),
        "codes": CodeRecognition(
            variant="from_layer2",
            num_classes=10,
            iterations=2,
            codec_width=WIDTH,
            init_compressor_from=str(ckpt),
            latency_warmup=0,
            latency_repeats=1,
        ),
        "shared_trunk": SharedTrunkTask(
            trunk="mobilenet_v2",
            task="classification",
            num_classes=10,
            width=0.25,
            image_size=32,
            codec="hevc",
            codec_quality=30,
            latency_warmup=0,
            latency_repeats=1,
        ),
    }
    for name, model in models.items():
        run = trainer(root / name, max_epochs=1)
        run.fit(model, datamodule=imagenet(imagenet_root))
        run.test(
            model, datamodule=imagenet(imagenet_root), verbose=False, ckpt_path="last" if name == "codes" else None
        )
    return root, {**models, "rnn_compressor": compressor}


@pytest.mark.slow
def test_every_method_writes_one_schema(runs):
    root, models = runs
    records = {name: read_record(root / name / "results" / "test.json") for name in models}
    for name, record in records.items():
        assert record["schema"] == SCHEMA and set(RECORD_KEYS) <= set(record), name
        assert record["stage"] == "test" and record["module"] == type(models[name]).__name__
        assert record["bytes_per_image"] > 0 and record["bpp"] > 0
        assert record["params_edge"] is not None and record["gmacs_server"] > 0
    assert {r["method"] for r in records.values()} == {"decoded_images", "codes", "shared_trunk", "rate_distortion"}
    # accuracy where there is one; the compressor has a rate–distortion curve instead, at 1..T iterations
    assert all(0 <= records[n]["acc_top1"] <= 1 for n in ("decoded_rnn", "decoded_jpeg", "codes", "shared_trunk"))
    assert [p["setting"] for p in records["rnn_compressor"]["curve"]] == ["it1", "it2"]

    # edge parameters are those of the modules that run on the device, counted here directly
    codes, cir, trunk = models["codes"], models["decoded_rnn"], models["shared_trunk"]
    assert records["codes"]["params_edge"] == params(codes.model.codec.encoder, codes.model.codec.binarizer)
    assert records["decoded_rnn"]["params_edge"] == params(cir.compressor.encoder, cir.compressor.binarizer)
    assert records["decoded_rnn"]["params_server"] == params(cir.compressor.decoder, cir.recogniser)
    assert records["decoded_jpeg"]["params_edge"] == 0  # a classical codec: nothing learned on the device
    assert records["decoded_jpeg"]["params_server"] == params(models["decoded_jpeg"].recogniser)
    assert records["decoded_jpeg"]["gmacs_edge"] == 0 and records["decoded_jpeg"]["ms_edge"] is None  # not a network
    assert records["decoded_jpeg"]["ms_server"] > 0
    assert records["shared_trunk"]["params_edge"] == params(trunk.split.edge)
    # CompressedImageRecognition logs the same split quantities as the others, through the same accounting
    metrics = records["decoded_rnn"]["metrics"]
    for key in ("params_edge", "params_server", "gmacs_edge", "gmacs_server", "ms_edge", "ms_server"):
        assert metrics[f"test/{key}"] == pytest.approx(records["decoded_rnn"][key]), key
    assert records["decoded_rnn"]["ms_edge"] > 0 and records["decoded_rnn"]["ms_server"] > 0
    # its own setting fields stay in the record (what the decoded-recognition report reads)
    assert records["decoded_rnn"]["regime"] == "compressed_image_model"
    # the tested checkpoint is named and hashed
    ckpt = root / "codes" / "checkpoints" / "last.ckpt"
    assert records["codes"]["checkpoint"] == str(ckpt)
    assert records["codes"]["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert records["shared_trunk"]["checkpoint"] is None  # tested the model in memory


@pytest.mark.slow
def test_report_rows_match_the_records(runs, tmp_path):
    root, models = runs
    rows = main([str(root), "--out", str(tmp_path / "report")])
    assert len(rows) == len(models)
    with (tmp_path / "report" / "split_report.csv").open() as f:
        written = {row["run"].rsplit("/", 1)[-1]: row for row in csv.DictReader(f)}
    assert set(written) == set(models)
    for name in models:
        record = json.loads((root / name / "results" / "test.json").read_text())
        row = written[name]
        assert row["method"] == record["method"] and row["setting"] == record["setting"]
        assert float(row["bytes_per_image"]) == pytest.approx(record["bytes_per_image"])
        assert float(row["gmacs_edge"]) == pytest.approx(record["gmacs_edge"])
        if record["acc_top1"] is not None:
            assert float(row["score_pct"]) == pytest.approx(100 * record["acc_top1"])
    markdown = (tmp_path / "report" / "split_report.md").read_text().splitlines()
    assert len(markdown) == 2 + len(models) and markdown[0].startswith("| method | setting")
    with Image.open(tmp_path / "report" / "split_report.png") as png:
        assert png.size[0] > 1000 and png.size[1] > 500


def test_report_refuses_what_is_not_a_record(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--out", str(tmp_path / "report")])  # nothing there
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing"), "--out", str(tmp_path / "report")])
    (tmp_path / "run" / "results").mkdir(parents=True)
    (tmp_path / "run" / "results" / "test.json").write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match=r"run/results/test\.json: not a splitcv\.results/1 record"):
        read_record(tmp_path / "run" / "results" / "test.json")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "run"), "--out", str(tmp_path / "report")])
