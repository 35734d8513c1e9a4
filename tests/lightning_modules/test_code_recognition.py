"""CodeRecognition: compressor checkpoints into every variant, fit / resume / test / predict on tiny data."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from datamodules.fixtures import write_imagenet
from datamodules.imagenet_subset import ImageNetSubset
from lightning_modules.checkpoint_init import CheckpointMismatchError
from lightning_modules.code_recognition import CodeRecognition
from lightning_modules.rnn_compressor import RNNCompressor
from models.rnn_codec import RNNCodec
from tests.lightning_modules.tiny_trainer import trainer

pytestmark = pytest.mark.usefixtures("one_thread")


VARIANTS = ["conventional", "from_layer2", "from_layer3", "from_layer4"]
WIDTH = 0.0625
NUM_CLASSES = 10  # the ImageNet fixture writes the ten classes of imagenet10
SIZE = 32


class RandomImages(L.LightningDataModule):
    """Fixed random images in [0, 1] with labels, one batch per epoch; no shuffling, so runs compare step by step."""

    def __init__(self, n: int = 4, batch_size: int = 4, size: int = SIZE) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.data = TensorDataset(
            torch.rand(n, 3, size, size, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)
        )
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size)

    val_dataloader = test_dataloader = predict_dataloader = train_dataloader


def module(variant: str, **kwargs) -> CodeRecognition:
    kwargs = {"num_classes": NUM_CLASSES, "codec_width": WIDTH, "latency_warmup": 1, "latency_repeats": 2, **kwargs}
    return CodeRecognition(variant=variant, **kwargs)


@pytest.fixture(scope="module")
def imagenet_fixture(tmp_path_factory) -> str:
    """The ImageNet fixture (ILSVRC layout, real wnids) with 2 training and 1 validation image per class."""
    return str(
        write_imagenet(tmp_path_factory.mktemp("imagenet"), train_per_wnid=2, val_per_wnid=1, image_size=(40, 48))
    )


def imagenet_data(root: str) -> ImageNetSubset:
    return ImageNetSubset(
        root, class_list=f"{root}/class_list.txt", image_size=SIZE, batch_size=4, num_workers=0, pin_memory=False
    )


@pytest.fixture(scope="module")
def compressor_checkpoint(tmp_path_factory) -> str:
    """A real RNNCompressor checkpoint: tiny width, one iteration, a few training steps."""
    root = tmp_path_factory.mktemp("rnn_compressor")
    torch.manual_seed(0)
    patches = DataLoader(torch.rand(4, 3, 32, 32), batch_size=2)
    fit = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        default_root_dir=root,
    )
    fit.fit(RNNCompressor(width=WIDTH, iterations=1), train_dataloaders=patches)
    path = root / "compressor.ckpt"
    fit.save_checkpoint(path)
    return str(path)


@pytest.mark.parametrize("variant", VARIANTS)
def test_compressor_checkpoint_loads_with_only_the_expected_keys_left_out(variant, compressor_checkpoint):
    model = module(variant, init_compressor_from=compressor_checkpoint)
    report = model.parent_init.apply(model)  # what the start of a fresh run does
    source = torch.load(compressor_checkpoint, weights_only=True)["state_dict"]
    decoder_keys = {k for k in source if k.startswith("codec.decoder.")}
    assert decoder_keys
    if variant == "conventional":
        assert report.unexpected == []
        assert {k.split(".")[0] for k in report.missing} == {"classifier"}
        assert set(report.loaded) == set(source)
    else:
        assert set(report.unexpected) == decoder_keys
        assert {k.split(".")[0] for k in report.missing} == {"adapter", "trunk"}
        assert set(report.loaded) == set(source) - decoder_keys
        assert report.summary().endswith(f"{len(decoder_keys)} unused (codec.decoder)")
    state = model.model.state_dict()
    for key in report.loaded:
        torch.testing.assert_close(state[key], source[key])


def test_a_compressor_of_another_width_or_another_method_fails_naming_keys(tmp_path):
    wrong_width = tmp_path / "wide.ckpt"
    codec = RNNCodec(width=0.125)
    torch.save({"state_dict": {"codec." + k: v for k, v in codec.state_dict().items()}}, wrong_width)
    model = module("from_layer2", init_compressor_from=str(wrong_width))
    with pytest.raises(CheckpointMismatchError, match="shape mismatches: codec.binarizer.conv.weight"):
        model.parent_init.apply(model)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(1)}}, other)
    model = module("from_layer3", init_compressor_from=str(other))
    with pytest.raises(CheckpointMismatchError, match=r"missing keys .*codec\.encoder\.conv\.weight"):
        model.parent_init.apply(model)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fit_resume_test_and_predict_on_the_imagenet_fixture(variant, tmp_path, imagenet_fixture):
    torch.manual_seed(0)
    data = imagenet_data(imagenet_fixture)
    model = module(variant, reconstruction_weight=0.5 if variant == "conventional" else 0.0)
    encoder_before = model.model.codec.encoder.conv.weight.detach().clone()
    first = trainer(tmp_path, max_epochs=1)
    first.fit(model, datamodule=data)
    assert first.global_step == 1
    assert not torch.equal(model.model.codec.encoder.conv.weight, encoder_before)  # trained end to end
    for name in ("train/loss", "val/acc_top1", "val/acc_top5", "val/bpp", "val/bytes_per_image"):
        assert math.isfinite(float(first.callback_metrics[name])), name
    # 32×32 images: 2×2 code blocks of 32 bits per iteration → 16 bit-packed payload bytes (smaller than any
    # entropy-coded chunk: 32 probabilities + length + 8-byte flush) + the 28-byte header
    assert float(first.callback_metrics["val/bytes_per_image"]) == 28 + 16
    assert float(first.callback_metrics["val/payload_bpp"]) == pytest.approx(32 / 256)
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)

    resumed_model = module(variant, reconstruction_weight=0.5 if variant == "conventional" else 0.0)
    seen = {}

    class FirstStep(Callback):
        def on_train_start(self, trainer, pl_module):
            seen["weights"] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    second = trainer(tmp_path, max_epochs=2, callbacks=[FirstStep()])
    second.fit(resumed_model, datamodule=data, ckpt_path=str(last))
    assert second.global_step == 2
    for key, value in saved["state_dict"].items():
        torch.testing.assert_close(seen["weights"][key], value)

    results = second.test(resumed_model, datamodule=data, verbose=False)[0]
    assert results["test/ms_per_image"] > 0
    counts = resumed_model.parameter_counts()
    assert results["test/params_total"] == counts["total"] == counts["edge"] + counts["server"]
    assert results["test/gmacs_total"] == pytest.approx(results["test/gmacs_edge"] + results["test/gmacs_server"])
    assert results["test/gmacs_server"] > 0 and results["test/gmacs_edge"] > 0
    predictions = second.predict(resumed_model, datamodule=data)
    probs = torch.cat([p["probs"] for p in predictions])
    assert probs.shape == (4, NUM_CLASSES)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(4))


class StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_resume_continues_exactly_with_a_frozen_encoder(tmp_path):
    """Frozen encoder (sign binarizer, no sampling): 1 epoch + resume = 2 epochs uninterrupted."""
    data = RandomImages()
    torch.manual_seed(0)
    straight = module("from_layer3", freeze_encoder=True)
    initial = {k: v.clone() for k, v in straight.state_dict().items()}
    trainer(tmp_path / "straight", max_epochs=2, val_batches=0).fit(straight, datamodule=data)

    interrupted = module("from_layer3", freeze_encoder=True)
    interrupted.load_state_dict(initial)
    trainer(tmp_path / "split", max_epochs=2, callbacks=[StopAfterFirstEpoch()], val_batches=0).fit(
        interrupted, datamodule=data
    )
    resumed = module("from_layer3", freeze_encoder=True)
    last = tmp_path / "split" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 1
    trainer(tmp_path / "split", max_epochs=2, val_batches=0).fit(resumed, datamodule=data, ckpt_path=str(last))

    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, msg=key)
    # the frozen encoder did not move and stayed in eval mode
    for key, value in initial.items():
        if key.startswith(("model.codec.encoder.", "model.codec.binarizer.")):
            torch.testing.assert_close(resumed.state_dict()[key], value)
    assert not resumed.model.codec.binarizer.training


def test_frozen_parts_stay_in_eval_mode_through_train():
    model = module("conventional", freeze_encoder=True, freeze_decoder=True)
    model.train()
    assert model.model.classifier.training
    assert not model.model.codec.encoder.training
    assert not model.model.codec.binarizer.training
    assert not model.model.codec.decoder.training
    assert all(not p.requires_grad for p in model.model.codec.parameters())


def test_options_that_need_a_decoder_are_refused_without_one():
    with pytest.raises(ValueError, match="need a decoder"):
        module("from_layer2", reconstruction_weight=1.0)


def test_accuracy_is_plain_micro_top_k_on_imbalanced_labels():
    """8 images of class 0, one of class 1, one of class 9; the model ranks classes 0 > 1 > … > 9 for every
    image. Plain top-1 = 8/10 and top-5 = 9/10; a mean over the classes present (macro) would give 1/3 and 2/3."""
    model = module("from_layer4").eval()
    images = torch.rand(10, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0] * 8 + [1, 9])
    real = model.model.forward_with_codes

    def ranked(x):
        out = real(x)
        return {**out, "logits": torch.arange(NUM_CLASSES, 0, -1.0).expand(x.shape[0], NUM_CLASSES)}

    model.model.forward_with_codes = ranked
    with torch.no_grad():
        model.validation_step((images[:6], labels[:6]), 0)
        model.validation_step((images[6:], labels[6:]), 1)
    assert float(model.acc_top1["val"].compute()) == pytest.approx(0.8)
    assert float(model.acc_top5["val"].compute()) == pytest.approx(0.9)


def test_shared_top_k_is_micro_and_logs_under_the_contract_names():
    """classification_steps: every classifier's acc_top1/acc_top5 is plain accuracy (8 of 10 right = 0.8
    even though class 1 and class 9 are each 0 % right, which macro averaging would weigh as 1/3)."""
    from lightning_modules.classification_steps import top_k_accuracies

    top1, top5 = top_k_accuracies(10)
    labels = torch.tensor([0] * 8 + [1, 9])
    logits = torch.zeros(10, 10)
    logits[:, 0] = 1.0  # always predicts class 0
    top1["val"].update(logits, labels)
    assert top1["val"].compute().item() == pytest.approx(0.8)
    assert top5["test"].top_k == 5 and top_k_accuracies(3)[1]["val"].top_k == 3
