"""CompressedImageRecognition: every task × regime fits, validates, tests and resumes on the fixtures; the
compressor stays frozen; bytes and data reduction come from real streams and the source files' sizes."""

from __future__ import annotations

import shutil

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from coding.image_codecs import to_float_chw, to_uint8_hwc
from coding.rnn_bitstream import compress, decompress
from datamodules.decoded_cache import DecodingLoader
from datamodules.image_io import load_rgb
from datamodules.imagenet_subset import ImageNetSubset
from datamodules.voc import VOC
from datamodules.voc_eval import VOCMeanAveragePrecision
from lightning_modules.compressed_image_recognition import REGIMES, CompressedImageRecognition
from lightning_modules.detection_steps import split_detection_batch
from lightning_modules.rnn_compressor import RNNCompressor
from models.rnn_codec import RNNCodec
from tests.lightning_modules.tiny_trainer import trainer

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTH = 0.0625
K = 2
PAPER_REGIMES = [("original", "original"), ("compressed", "original"), ("compressed", "compressed")]


@pytest.fixture(scope="module")
def compressor_checkpoint(tmp_path_factory) -> str:
    """A real RNNCompressor checkpoint: tiny width, a few training steps."""
    root = tmp_path_factory.mktemp("rnn_compressor")
    torch.manual_seed(0)
    fit = L.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, limit_val_batches=0, default_root_dir=root,
    )  # fmt: skip
    fit.fit(RNNCompressor(width=WIDTH, iterations=K), train_dataloaders=DataLoader(torch.rand(4, 3, 32, 32)))
    path = root / "compressor.ckpt"
    fit.save_checkpoint(path)
    return str(path)


def imagenet(root: str) -> ImageNetSubset:
    return ImageNetSubset(
        root, class_list=f"{root}/class_list.txt", image_size=32, batch_size=10, num_workers=0, pin_memory=False
    )


def voc(root: str) -> VOC:
    return VOC(
        root, train_splits=["2007-train"], val_splits=["2007-val"], test_splits=["2007-test"], image_size=64,
        batch_size=2, num_workers=0, pin_memory=False,
    )  # fmt: skip


def make_module(task: str, train_on: str, eval_on: str, cache: str, compressor: str | None, **kwargs):
    common = {"codec_width": WIDTH, "iterations": K, "decoded_cache_dir": cache, "cache_workers": 0}
    if task == "classification":
        common.update(num_classes=10, arch="shufflenet_v2_x0_5", lr=0.01)
    else:
        common.update(num_classes=21, detector_width=0.25, detector_image_size=64, lr=0.01)
    return CompressedImageRecognition(
        task=task, train_on=train_on, eval_on=eval_on, init_compressor_from=compressor, **{**common, **kwargs}
    )


def direct_decode(codec):
    """``path -> uint8 image``: the source through ``compress`` / ``decompress`` here, not through the module."""

    def load(path):
        x = to_float_chw(load_rgb(path)).unsqueeze(0)
        return to_uint8_hwc(decompress(codec, compress(codec, x, K, coding="packed"))[0])

    return load


def independent_score(task: str, model, data, compressed: bool) -> float:
    """Top-1 accuracy or VOC07 mAP of the model's network on the first validation batch, its images read by
    :func:`direct_decode` (or the source files): what the logged score must be with ``limit_val_batches=1``."""
    leaves = data.val_set.datasets if task == "detection" else [data.val_set]
    saved = [leaf.image_loader for leaf in leaves]
    for leaf in leaves:
        leaf.image_loader = direct_decode(model.compressor) if compressed else load_rgb
    try:
        batch = next(iter(data.val_dataloader()))
        model.eval()
        with torch.no_grad():
            if task == "classification":
                images, labels = batch
                return (model.recogniser(images).argmax(dim=1) == labels).float().mean().item()
            images, targets = split_detection_batch(batch)
            metric = VOCMeanAveragePrecision()
            metric.update(model.recogniser(images), targets)
            return float(metric.compute()["map50"])
    finally:
        for leaf, loader in zip(leaves, saved, strict=True):
            leaf.image_loader = loader


def expected_rates(paths, codec, compressed: bool) -> dict[str, float]:
    """Bytes per image from len(compress(...)) of each source image, or its file size; source file sizes."""
    source = [p.stat().st_size for p in paths]
    if compressed:
        sent = [len(compress(codec, to_float_chw(load_rgb(p)).unsqueeze(0), K, coding="packed")) for p in paths]
    else:
        sent = source
    return {
        "bytes_per_image": float(np.mean(sent)),
        "source_bytes_per_image": float(np.mean(source)),
        "data_reduction": 1 - sum(sent) / sum(source),
    }


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "detection"])
@pytest.mark.parametrize("train_on,eval_on", PAPER_REGIMES, ids=[REGIMES[r][0] for r in PAPER_REGIMES])
def test_each_task_and_regime_fits_validates_tests_and_resumes(task, train_on, eval_on, tmp_path, request):
    compressor_checkpoint = request.getfixturevalue("compressor_checkpoint")
    parent = tmp_path / "parent.ckpt"  # a copy that disappears before the resume
    shutil.copy(compressor_checkpoint, parent)
    cache = str(tmp_path / "cache")
    if task == "classification":
        data = imagenet(request.getfixturevalue("imagenet_root"))
    else:
        data = voc(request.getfixturevalue("voc_root"))
    model = make_module(task, train_on, eval_on, cache, str(parent))
    first = trainer(tmp_path / "run", max_epochs=1)
    first.fit(model, datamodule=data)
    assert first.global_step == 1

    # the compressor is frozen: identical weights and state, eval mode, no gradient, not in the optimiser
    source = torch.load(compressor_checkpoint, weights_only=True)["state_dict"]
    for key, value in model.compressor.state_dict().items():
        torch.testing.assert_close(value, source["codec." + key], rtol=0, atol=0)
    assert not model.compressor.training and not any(p.requires_grad for p in model.compressor.parameters())
    optimised = {id(p) for group in first.optimizers[0].param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in model.compressor.parameters()}

    # bytes: the real per-image stream (or the source file when originals are evaluated) vs the source JPEG
    compressed = eval_on == "compressed"
    want = expected_rates(data.val_set.datasets[0].source_paths() if task == "detection" else data.val_set.source_paths(),
                          model.compressor, compressed)  # fmt: skip
    metrics = first.callback_metrics
    for name, value in want.items():
        assert float(metrics[f"val/{name}"]) == pytest.approx(value, rel=1e-6), name
    assert (float(metrics["val/data_reduction"]) > 0) == compressed
    # the score, recomputed outside the module from images decoded here (or the sources)
    metric = "val/acc_top1" if task == "classification" else "val/map50"
    assert float(metrics[metric]) == pytest.approx(independent_score(task, model, data, compressed), abs=1e-6)

    # resume from the run's own checkpoint, with the parent file gone: the compressor comes from the checkpoint
    parent.unlink()
    resumed = make_module(task, train_on, eval_on, cache, str(parent))
    second = trainer(tmp_path / "run", max_epochs=2)
    second.fit(resumed, datamodule=data, ckpt_path=str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    assert second.global_step == 2
    torch.testing.assert_close(resumed.compressor.state_dict(), model.compressor.state_dict(), rtol=0, atol=0)
    # test a fresh module from the run's checkpoint (parent still gone): same compressor, same cached images
    fresh = make_module(task, train_on, eval_on, cache, str(parent))
    results = second.test(fresh, datamodule=data, ckpt_path=str(tmp_path / "run" / "checkpoints" / "last.ckpt"))[0]
    torch.testing.assert_close(fresh.compressor.state_dict(), model.compressor.state_dict(), rtol=0, atol=0)
    test_set = data.val_set if task == "classification" else data.test_set.datasets[0]
    for name, value in expected_rates(test_set.source_paths(), model.compressor, compressed).items():
        assert results[f"test/{name}"] == pytest.approx(value, rel=1e-6), name
    assert ("test/acc_top1" if task == "classification" else "test/map50") in results
    predictions = second.predict(fresh, datamodule=data)
    if task == "classification":
        probs = torch.cat([p["probs"] for p in predictions])
        torch.testing.assert_close(probs.sum(dim=1), torch.ones(len(probs)))
    else:
        assert all({"boxes", "scores", "labels"} <= set(d) for batch in predictions for d in batch)


def test_decoded_cache_holds_the_real_bitstream_decode_and_is_reused(tmp_path, compressor_checkpoint, imagenet_root):
    cache = str(tmp_path / "cache")
    data = imagenet(imagenet_root)
    model = make_module("classification", "original", "compressed", cache, compressor_checkpoint)
    fit = trainer(tmp_path / "run", max_epochs=1)
    cached = fit.validate(model, datamodule=data, verbose=False)[0]
    (decoded_cache, _), *_ = model.caches()
    path = data.val_set.source_paths()[3]
    x = to_float_chw(load_rgb(path)).unsqueeze(0)
    stream = compress(model.compressor, x, K, coding="packed")
    expected = (decompress(model.compressor, stream)[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(data.val_set.image_loader(path), expected)
    assert decoded_cache.record(path).bytes == len(stream)
    assert decoded_cache.record(path).source_bytes == path.stat().st_size
    # other weights (the untrained codec before loading) are another cache; the same compressor and k reuse this
    # one and decode nothing; another k is another cache
    again = make_module("classification", "original", "compressed", cache, compressor_checkpoint)
    assert again.caches()[0][0].directory != decoded_cache.directory
    again.load_compressor(compressor_checkpoint)
    assert again.caches()[0][0].directory == decoded_cache.directory
    assert decoded_cache.build(data.val_set.source_paths(), again.channels()[0]) == 0
    other_k = make_module("classification", "original", "compressed", cache, compressor_checkpoint, iterations=1)
    other_k.load_compressor(compressor_checkpoint)
    assert other_k.caches()[0][0].directory != decoded_cache.directory
    smallest = make_module("classification", "original", "compressed", cache, None, stream_coding="smallest")
    smallest.load_compressor(compressor_checkpoint)
    assert smallest.caches()[0][0].directory != decoded_cache.directory  # other bytes: another cache
    # no cache: the same images and bytes, decoded again whenever an image is read
    uncached = make_module("classification", "original", "compressed", None, compressor_checkpoint)
    results = trainer(tmp_path / "uncached", max_epochs=1).validate(uncached, datamodule=data, verbose=False)[0]
    assert isinstance(data.val_set.image_loader, DecodingLoader)
    np.testing.assert_array_equal(data.val_set.image_loader(path), expected)
    for name in ("val/bytes_per_image", "val/data_reduction", "val/acc_top1"):
        assert results[name] == pytest.approx(cached[name]), name


def test_a_classical_channel_matched_to_the_compressor_bytes(tmp_path, compressor_checkpoint, imagenet_root):
    cache = str(tmp_path / "cache")
    data = imagenet(imagenet_root)
    model = make_module("classification", "original", "compressed", cache, compressor_checkpoint, channel="webp")
    results = trainer(tmp_path / "run", max_epochs=1).validate(model, datamodule=data, verbose=False)[0]
    (rnn_cache, _), (webp_cache, _) = model.caches()
    paths = data.val_set.source_paths()
    for path in paths:
        rnn_bytes, webp = rnn_cache.record(path).bytes, webp_cache.record(path)
        assert webp.bytes <= rnn_bytes or (not webp.fits and webp.quality == 0)
    sent = [webp_cache.record(p).bytes for p in paths]
    assert results["val/bytes_per_image"] == pytest.approx(np.mean(sent))
    assert results["val/over_budget_fraction"] == pytest.approx(np.mean([not webp_cache.record(p).fits for p in paths]))


def test_bad_settings_fail_before_any_work(tmp_path, imagenet_root):
    with pytest.raises(ValueError, match="quality and target_bpp are for classical channels"):
        CompressedImageRecognition(channel="rnn", quality=50)
    with pytest.raises(ValueError, match="either quality or target_bpp"):
        CompressedImageRecognition(channel="jpeg", quality=50, target_bpp=0.5)
    with pytest.raises(ValueError, match="out of range"):
        CompressedImageRecognition(channel="jpeg", quality=0)
    model = make_module("classification", "compressed", "compressed", str(tmp_path), str(tmp_path / "missing.ckpt"))
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        trainer(tmp_path / "run", max_epochs=1).fit(model, datamodule=imagenet(imagenet_root))


class CodecWatch(Callback):
    """Counts images encoded by any ``RNNCodec`` (the class's ``encode``, so copies of the compressor sent to
    workers count too): in all, and from the start of training (batch fetching included) to the end of the
    training epoch; keeps the first training batch."""

    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        self.calls_in_training = 0
        self.batch = None
        encode = RNNCodec.encode

        def counting(codec, *args, **kwargs):
            self.calls += 1
            return encode(codec, *args, **kwargs)

        monkeypatch.setattr(RNNCodec, "encode", counting)

    def on_train_start(self, trainer, pl_module) -> None:  # after the module's on_fit_start built the caches
        self.at_start = self.calls

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.batch is None:
            self.batch = [t.clone() for t in batch]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.calls_in_training += self.calls - self.at_start


class DeterministicTraining(ImageNetSubset):
    """The fixture DataModule with the evaluation transform on the training set (so a batch can be compared)."""

    def setup(self, stage=None) -> None:
        super().setup(stage)
        if self.train_set is not None:
            self.train_set.transform = self.val_set.transform


@pytest.mark.parametrize("eval_on,cached", [("original", True), ("compressed", False)])
def test_training_batches_of_the_compressed_regimes_are_decoded_images(
    eval_on, cached, tmp_path, compressor_checkpoint, imagenet_root, monkeypatch
):
    data = DeterministicTraining(imagenet_root, class_list=f"{imagenet_root}/class_list.txt", image_size=32,
                                 batch_size=10, num_workers=0, pin_memory=False)  # fmt: skip
    cache = str(tmp_path / "cache") if cached else None
    model = make_module("classification", "compressed", eval_on, cache, compressor_checkpoint)
    model.load_compressor(compressor_checkpoint)
    watch = CodecWatch(monkeypatch)
    trainer(tmp_path / "run", max_epochs=1, callbacks=[watch]).fit(model, datamodule=data)
    images, labels = watch.batch
    assert len(labels) == 10  # every training image: one per class, so its label names its file
    by_label = {sample.label: sample.path for sample in data.train_set.samples}
    decode = direct_decode(model.compressor)
    for image, label in zip(images, labels.tolist(), strict=True):
        path = by_label[label]
        expected = data.val_set.transform(image=decode(path))["image"]
        torch.testing.assert_close(image, expected, rtol=0, atol=0)
        original = data.val_set.transform(image=load_rgb(path))["image"]
        assert not torch.equal(image, original)
    # cached (the default): the codec ran while the cache was built, never while training
    assert watch.calls > 0
    assert (watch.calls_in_training == 0) == cached


def test_the_codec_is_off_in_training_by_default(tmp_path, compressor_checkpoint, imagenet_root, monkeypatch):
    """Default decoded_cache_dir: training reads stored decoded images, the compressor never runs in a training
    epoch; trained on originals (conventional), it never runs at all."""
    default = CompressedImageRecognition(codec_width=WIDTH)
    assert default.hparams.decoded_cache_dir is not None
    for train_on, eval_on in (("compressed", "compressed"), ("original", "original")):
        model = make_module("classification", train_on, eval_on, str(tmp_path / "cache"), compressor_checkpoint)
        model.load_compressor(compressor_checkpoint)
        watch = CodecWatch(monkeypatch)
        trainer(tmp_path / train_on, max_epochs=1, callbacks=[watch]).fit(model, datamodule=imagenet(imagenet_root))
        assert watch.calls_in_training == 0
        assert (watch.calls > 0) == (train_on == "compressed")
        assert not model.compressor.training and all(p.grad is None for p in model.compressor.parameters())
