"""The code-recognition benchmark runs end to end at a tiny size and its table is self-consistent."""

from __future__ import annotations

import json

import pytest
import torch
from rich.progress import Progress

from benchmarks.code_recognition_table import PAPER, accuracy, main
from models.code_classifier import VARIANTS, CodeRecognitionNet

pytestmark = pytest.mark.usefixtures("one_thread")


def test_table_rows_times_macs_and_parameters(tmp_path, capsys):
    out = tmp_path / "table.json"
    args = ["--width", "0.0625", "--image-size", "64", "--iterations", "1", "2", "--repeats", "2", "--warmup", "0"]
    results = main([*args, "--num-classes", "10", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    rows = results["rows"]
    assert [(r["variant"], r["iterations"]) for r in rows] == [(v, k) for k in (1, 2) for v in VARIANTS]
    for r in rows:
        net = CodeRecognitionNet(r["variant"], num_classes=10, iterations=r["iterations"], codec_width=0.0625)
        assert r["params_total"] == net.parameter_counts()["total"]
        assert r["params_gap"] == r["params_total"] - PAPER[r["variant"]]["params"]
        assert r["macs_edge"] + r["macs_server"] == r["macs_total"]
        assert r["ms_p25"] <= r["ms_per_image"] <= r["ms_p75"] or r["ms_p25"] == r["ms_p75"]
    for k in (1, 2):
        same_k = {r["variant"]: r for r in rows if r["iterations"] == k}
        assert len({r["macs_edge"] for r in same_k.values()}) == 1  # one encoder, k iterations, in every variant
        assert same_k["conventional"]["mac_ratio_to_conventional"] == 1.0
        ratios = [same_k[v]["mac_ratio_to_conventional"] for v in VARIANTS[1:]]
        assert ratios == sorted(ratios, reverse=True) and ratios[0] < 1  # removing more stages costs less
    printed = capsys.readouterr().out
    assert "from_layer4" in printed and "MAC ratio" in printed


def test_bad_checkpoint_argument_names_the_variants():
    with pytest.raises(SystemExit, match="VARIANT=PATH"):
        main(["--checkpoints", "from_layer9=x.ckpt"])


class RankedClasses(torch.nn.Module):
    """Ranks classes 0 > 1 > … > 9 for every image."""

    variant = "from_layer4"

    def forward(self, images):
        return torch.arange(10, 0, -1.0).expand(images.shape[0], 10)


def test_accuracy_is_plain_micro_top_k_on_imbalanced_labels():
    # 8 images of class 0, one of class 1, one of class 9: top-1 8/10, top-5 9/10 (macro: 1/3 and 2/3)
    labels = torch.tensor([0] * 8 + [1, 9])
    loader = [(torch.zeros(5, 3, 8, 8), labels[:5]), (torch.zeros(5, 3, 8, 8), labels[5:])]
    with Progress(disable=True) as progress:
        result = accuracy(RankedClasses(), loader, 10, torch.device("cpu"), progress)
    assert result == pytest.approx({"acc_top1": 80.0, "acc_top5": 90.0})
