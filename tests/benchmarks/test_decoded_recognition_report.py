"""The decoded-recognition report reads what CompressedImageRecognition runs wrote and draws Figure 4."""

from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch
from PIL import Image

from benchmarks.decoded_recognition_report import main, print_table, row_from_summary
from datamodules.fixtures import write_imagenet
from datamodules.imagenet_subset import ImageNetSubset
from lightning_modules.compressed_image_recognition import REGIMES, CompressedImageRecognition
from models.rnn_codec import RNNCodec

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = {  # run name → (train_on, eval_on, channel, k)
    "conventional": ("original", "original", "rnn", 1),
    "compressed_k1": ("compressed", "compressed", "rnn", 1),
    "compressed_k2": ("compressed", "compressed", "rnn", 2),
    "webp_k1": ("compressed", "compressed", "webp", 1),
}


@pytest.mark.slow
def test_report_of_validated_runs(tmp_path):
    root = write_imagenet(tmp_path / "imagenet", train_per_wnid=1, val_per_wnid=1, image_size=(40, 48))
    compressor = tmp_path / "compressor.ckpt"
    torch.manual_seed(0)
    codec = RNNCodec(width=0.0625)
    torch.save({"state_dict": {f"codec.{k}": v for k, v in codec.state_dict().items()}}, compressor)
    for name, (train_on, eval_on, channel, k) in SETTINGS.items():
        model = CompressedImageRecognition(
            num_classes=10, train_on=train_on, eval_on=eval_on, channel=channel, iterations=k, codec_width=0.0625,
            init_compressor_from=str(compressor), decoded_cache_dir=str(tmp_path / "cache"), cache_workers=0,
            arch="shufflenet_v2_x0_5",
        )  # fmt: skip
        data = ImageNetSubset(
            root, class_list=f"{root}/class_list.txt", image_size=32, batch_size=10, num_workers=0, pin_memory=False
        )
        L.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            default_root_dir=tmp_path / "runs" / name,
        ).validate(model, datamodule=data, verbose=False)  # fmt: skip

    rows = main([str(tmp_path / "runs"), "--out", str(tmp_path / "report")])
    assert {(r["regime"], r["channel"], r["k"]) for r in rows} == {
        ("conventional", "original", ""),
        ("compressed_image_model", "rnn", 1),
        ("compressed_image_model", "rnn", 2),
        ("compressed_image_model", "webp", 1),
    }
    with (tmp_path / "report" / "decoded_recognition.csv").open() as f:
        written = {row["run"].rsplit("/", 1)[-1]: row for row in csv.DictReader(f)}
    for name in SETTINGS:
        metrics = json.loads((tmp_path / "runs" / name / "results" / "val.json").read_text())["metrics"]
        assert float(written[name]["score_pct"]) == pytest.approx(100 * metrics["val/acc_top1"])
        assert float(written[name]["data_reduction_pct"]) == pytest.approx(100 * metrics["val/data_reduction"])
        assert written[name]["stage"] == "val"
    assert float(written["conventional"]["data_reduction_pct"]) == 0
    # two iterations send more bytes than one: less reduction
    assert float(written["compressed_k2"]["data_reduction_pct"]) < float(written["compressed_k1"]["data_reduction_pct"])
    with Image.open(tmp_path / "report" / "decoded_recognition_classification.png") as png:
        assert png.size[0] > 500 and png.size[1] > 400


def test_report_refuses_an_empty_input(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--out", str(tmp_path / "report")])


def test_the_printed_table_keeps_every_name_whole_when_output_is_not_a_terminal(capsys):
    """Rich would squeeze the table to 80 columns in a log and cut the names; the Markdown lines keep them."""
    rows = []
    for (train_on, eval_on), (regime, _paper) in REGIMES.items():
        summary = {"task": "classification", "train_on": train_on, "eval_on": eval_on, "channel": "webp",
                   "iterations": 3, "metrics": {"val/acc_top1": 0.5, "val/data_reduction": 0.9,
                                                "val/bytes_per_image": 3100.0, "val/source_bytes_per_image": 65500.0}}  # fmt: skip
        rows.append(row_from_summary(summary, "val", f"runs/a_long_run_directory_name_{regime}"))
    print_table(rows)
    lines = capsys.readouterr().out.splitlines()
    for (regime, paper), row in zip(REGIMES.values(), rows, strict=True):
        line = next(line for line in lines if f"| {regime} " in line)
        assert f"| {paper} " in line and f"| {row['channel']} " in line and line.endswith(" 65500 |")
    assert len({len(line) for line in lines if line.startswith("|")}) <= 2  # padded columns (CJK cells count as 1)
