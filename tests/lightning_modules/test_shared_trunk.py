"""SharedTrunkTask: each trunk × task fits, validates, tests and resumes on the fixtures; the edge stays frozen;
the bytes are the feature codec's real streams."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from coding.feature_codec import FeatureCodec
from coding.image_codecs import encode_image
from datamodules.imagenet_subset import ImageNetSubset
from datamodules.voc import VOC
from lightning_modules.shared_trunk import SharedTrunkTask
from tests.lightning_modules.tiny_trainer import trainer

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTH = {"vgg16": 1 / 16, "mobilenet_v2": 0.25}


def data_for(task: str, request) -> L.LightningDataModule:
    if task == "classification":
        root = request.getfixturevalue("imagenet_root")
        return ImageNetSubset(
            root, class_list=f"{root}/class_list.txt", image_size=32, batch_size=10, num_workers=0, pin_memory=False
        )
    return VOC(
        request.getfixturevalue("voc_root"), train_splits=["2007-train"], val_splits=["2007-val"],
        test_splits=["2007-test"], image_size=64, batch_size=2, num_workers=0, pin_memory=False,
    )  # fmt: skip


def module(trunk: str, task: str, **kwargs) -> SharedTrunkTask:
    defaults = {
        "num_classes": 10 if task == "classification" else 21,
        "width": WIDTH[trunk],
        "image_size": 64,
        "codec": "hevc",
        "codec_quality": 30,
        "lr": 0.01,
        "latency_warmup": 0,
        "latency_repeats": 1,
    }
    return SharedTrunkTask(trunk=trunk, task=task, **{**defaults, **kwargs})


def edge_state(model: SharedTrunkTask) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.split.edge.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "detection"])
@pytest.mark.parametrize("trunk", ["vgg16", "mobilenet_v2"])
def test_each_trunk_and_task_fits_tests_and_resumes(trunk, task, tmp_path, request):
    data = data_for(task, request)
    model = module(trunk, task)
    before = edge_state(model)
    if trunk == "mobilenet_v2":  # BatchNorm statistics live in the edge and must not move
        assert any(k.endswith("running_mean") for k in before)
    first = trainer(tmp_path / "run", max_epochs=1)
    first.fit(model, datamodule=data)
    assert first.global_step == 1

    # the edge is frozen: weights and BatchNorm statistics bit-identical, eval mode, outside the optimiser
    for key, value in model.split.edge.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)
    assert not model.split.edge.training and not any(p.requires_grad for p in model.split.edge.parameters())
    optimised = {id(p) for group in first.optimizers[0].param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in model.split.edge.parameters()}
    assert optimised  # the head is trained

    metrics = first.callback_metrics
    quality = "val/acc_top1" if task == "classification" else "val/map50"
    assert 0 <= float(metrics[quality]) <= 1
    ratio = 100 * float(metrics["val/bytes_per_image"]) / float(metrics["val/input_jpeg_bytes"])
    assert float(metrics["val/feature_bytes_ratio"]) == pytest.approx(ratio, rel=1e-5)
    if task == "classification":
        # the logged bytes are the codec's real streams of what the edge sends, and the basis the JPEG (q95)
        # of the very images the trunk sees
        images, _ = next(iter(data.val_dataloader()))
        model.eval()
        with torch.no_grad():
            sent = model.model.encode(images)
        codec = FeatureCodec("hevc", 30)
        streams = [len(codec.encode(one)) for one in sent]
        jpegs = [len(encode_image(im, "jpeg", 95)) for im in images]
        assert float(metrics["val/bytes_per_image"]) == pytest.approx(sum(streams) / len(streams), rel=1e-6)
        assert float(metrics["val/input_jpeg_bytes"]) == pytest.approx(sum(jpegs) / len(jpegs), rel=1e-6)
        assert float(metrics["val/acc_top5"]) >= float(metrics["val/acc_top1"])

    results = first.test(model, datamodule=data)[0]
    counts = model.parameter_counts()
    assert results["test/params_edge"] == sum(p.numel() for p in model.split.edge.parameters())
    assert (
        results["test/params_total"] == counts["edge"] + counts["server"] == sum(p.numel() for p in model.parameters())
    )
    assert 0 < results["test/gmacs_edge"] < results["test/gmacs_total"]
    assert results["test/ms_per_image"] > 0
    images = next(iter(data.val_dataloader()))[0]
    predictions = first.predict(model, dataloaders=DataLoader(list(images), batch_size=len(images)))[0]
    if task == "classification":
        assert predictions["probs"].shape == (len(images), 10)
    else:
        assert len(predictions) == len(images) and {"boxes", "scores", "labels"} <= set(predictions[0])

    resumed_model = module(trunk, task)
    second = trainer(tmp_path / "run", max_epochs=2)
    second.fit(resumed_model, datamodule=data, ckpt_path=str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    assert second.global_step == 2
    for key, value in resumed_model.split.edge.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)


def test_raw_wire_counts_float32_bytes_and_bad_settings_fail_early(imagenet_root, tmp_path, request):
    model = module("mobilenet_v2", "classification", codec=None)
    run = trainer(tmp_path / "run", max_epochs=1)
    run.validate(model, datamodule=data_for("classification", request), verbose=False)
    # no codec: the float32 tensor itself, 4 bytes × 32·w channels × (32/8)² at a 32×32 input
    channels = model.split.edge[-1].out_channels
    assert {key.split(".")[0] for key in model.state_dict()} == {"model"}  # every weight stored once
    assert float(run.callback_metrics["val/bytes_per_image"]) == 4 * channels * 4 * 4
    with pytest.raises(ValueError, match="qp"):
        module("vgg16", "classification", codec_quality=60)
    with pytest.raises(ValueError, match="codec_in_training"):
        module("vgg16", "classification", codec=None, codec_in_training=True)
    with pytest.raises(ValueError, match="width"):
        SharedTrunkTask(trunk="vgg16", weights="IMAGENET1K_V1", width=0.5)
