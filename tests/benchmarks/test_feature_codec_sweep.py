"""The feature-codec sweep runs end to end on a photo, and its equal-fidelity interpolation is right."""

import json
import math

import pytest

from benchmarks.feature_codec_sweep import bytes_at_psnr, equal_fidelity, main, network_inputs, settings
from coding.image_codecs import available_codecs, encode_image
from lightning_modules.shared_trunk import INPUT_JPEG_QUALITY


def test_bytes_at_psnr_interpolates_log_bytes():
    rows = [{"feature_psnr": 20.0, "bytes_per_image": 100.0}, {"feature_psnr": 30.0, "bytes_per_image": 1000.0}]
    # halfway in PSNR is halfway in log-bytes: √(100 · 1000)
    assert bytes_at_psnr(rows, 25.0) == pytest.approx(math.sqrt(100 * 1000))
    assert bytes_at_psnr(rows, 20.0) == pytest.approx(100.0)
    assert bytes_at_psnr(rows, 31.0) is None  # the curve never gets there


def test_equal_fidelity_is_taken_at_the_papers_setting():
    def row(layout, quality, psnr, size, chroma="420"):
        return {"trunk": "t", "codec": "hevc", "layout": layout, "quality": quality, "chroma": chroma,
                "feature_psnr": psnr, "bytes_per_image": size, "input_jpeg_bytes": 2000.0}  # fmt: skip

    rows = [
        row("r_channel", 35, 25.0, 1000.0), row("r_channel", 40, 22.0, 500.0),  # the reference: 25 dB
        row("mono", 40, 24.0, 300.0), row("mono", 35, 26.0, 1200.0),  # 25 dB halfway: √(300·1200) = 600
        row("square", 50, 28.0, 400.0), row("square", 40, 35.0, 900.0),  # better than 25 dB everywhere
        row("r_channel", 35, 21.0, 3000.0, chroma="444"),  # never gets there
    ]  # fmt: skip
    out = {r["curve"]: r for r in equal_fidelity(rows)}
    assert out["hevc / r_channel"]["bytes_per_image"] == pytest.approx(1000.0)
    assert out["hevc / mono"]["bytes_per_image"] == pytest.approx(600.0)
    assert out["hevc / mono"]["vs_reference"] == pytest.approx(0.6)
    assert out["hevc / mono"]["input_percent"] == pytest.approx(30.0)
    assert out["hevc / square"]["bytes_per_image"] == 400.0 and out["hevc / square"]["at_most"]
    assert out["hevc / r_channel 4:4:4"]["bytes_per_image"] is None


def test_settings_skip_impossible_combinations():
    grid = settings(["png", "webp", "hevc"], ["r_channel", "mono"], [30], [50], bits=10)
    # 10-bit levels exist only for png and hevc on grey layouts
    assert sorted(c.name for c in grid) == ["hevc-qp30-mono-10b", "png-mono-10b"]
    grid = settings(["png", "webp", "hevc"], ["r_channel", "mono"], [30], [50], bits=8, chromas=("420", "444"))
    # 4:4:4 only for the RGB image with hevc (or avif)
    assert [c.name for c in grid if c.chroma == "444"] == ["hevc-qp30-r_channel-8b-444"]


@pytest.mark.slow
def test_sweep_runs_on_a_photo(tmp_path):
    if "hevc" not in available_codecs():
        pytest.skip("no HEVC in this build")
    out = tmp_path / "sweep"
    results = main([
        "--trunks", "mobilenet_v2", "--width", "0.25", "--photos", "coffee", "--image-size", "64",
        "--codecs", "png", "hevc", "--qps", "20", "35", "50", "--layouts", "r_channel", "mono", "--chromas", "420", "--out", str(out),
    ])  # fmt: skip
    assert {p.name for p in out.iterdir()} == {f"feature_codec_sweep.{e}" for e in ("json", "csv", "png")}
    assert json.loads((out / "feature_codec_sweep.json").read_text())["rows"] == results["rows"]
    rows = results["rows"]
    assert len(rows) == 2 * (1 + 3)  # two layouts × (png + three QPs)
    assert "random initialisation" in results["weights"]["mobilenet_v2"]
    # PNG is lossless: both layouts decode to the same min–max levels, hence the same feature PSNR
    png = [r for r in rows if r["codec"] == "png"]
    assert png[0]["feature_psnr"] == pytest.approx(png[1]["feature_psnr"])
    for layout in ("r_channel", "mono"):
        hevc = sorted((r for r in rows if r["codec"] == "hevc" and r["layout"] == layout), key=lambda r: r["quality"])
        assert [r["bytes_per_image"] for r in hevc] == sorted((r["bytes_per_image"] for r in hevc), reverse=True)
        assert hevc[0]["feature_psnr"] > hevc[-1]["feature_psnr"]
    # the basis: the 64×64 network input as JPEG at the default quality (70), the same for every row
    jpeg = len(encode_image(network_inputs(["coffee"], 64)[0], "jpeg", INPUT_JPEG_QUALITY))
    assert all(r["input_jpeg_bytes"] == jpeg for r in rows)
    assert rows[0]["input_percent"] == pytest.approx(100 * rows[0]["bytes_per_image"] / jpeg)
    reference = [r for r in results["equal_fidelity"] if r["curve"] == "hevc / r_channel"]
    assert reference[0]["vs_reference"] == pytest.approx(1.0)


@pytest.mark.slow
def test_sweep_with_a_checkpoint_gives_tables_4_to_6(tmp_path):
    """With a checkpoint: a float row (Table 4), PNG = min–max only (Table 5, lossless) with Table 3's bytes, and
    HEVC rows (Table 6) — each with the checkpoint's accuracy and its own bytes on its data."""
    if "hevc" not in available_codecs():
        pytest.skip("no HEVC in this build")
    import torch

    from datamodules.fixtures import write_imagenet
    from datamodules.imagenet_subset import ImageNetSubset
    from lightning_modules.shared_trunk import SharedTrunkTask
    from tests.lightning_modules.tiny_trainer import trainer

    root = write_imagenet(tmp_path / "imagenet", train_per_wnid=1, val_per_wnid=1, image_size=(40, 48))
    data = ImageNetSubset(str(root), class_list=f"{root}/class_list.txt", image_size=32, batch_size=10,
                          num_workers=0, pin_memory=False)  # fmt: skip
    torch.manual_seed(0)
    module = SharedTrunkTask(trunk="mobilenet_v2", num_classes=10, width=0.25, image_size=32, codec=None,
                             latency_repeats=0)  # fmt: skip
    trainer(tmp_path / "run", max_epochs=1).fit(module, datamodule=data)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    results = main([
        "--trunks", "mobilenet_v2", "--width", "0.25", "--photos", "coffee", "--image-size", "32",
        "--codecs", "png", "hevc", "--qps", "35", "--layouts", "r_channel", "--chromas", "420",
        "--checkpoint", str(checkpoint), "--checkpoint-trunk", "mobilenet_v2", "--data-root", str(root),
        "--class-list", f"{root}/class_list.txt", "--num-workers", "0", "--out", str(tmp_path / "sweep"),
    ])  # fmt: skip
    rows = {r["codec"]: r for r in results["rows"]}
    assert set(rows) == {"float32", "png", "hevc"}
    # the float row: the checkpoint's sent tensor as float32, 4·C·H·W bytes
    module.eval()
    with torch.no_grad():
        sent = module.model.encode(torch.rand(1, 3, 32, 32))
    assert rows["float32"]["task_bytes_per_image"] == 4 * sent.numel()
    for codec in ("png", "hevc"):
        assert 0 < rows[codec]["task_bytes_per_image"] != rows["float32"]["task_bytes_per_image"]
        assert rows[codec]["acc_top5"] >= rows[codec]["acc_top1"]
    assert rows["hevc"]["task_bytes_per_image"] < rows["png"]["task_bytes_per_image"]
