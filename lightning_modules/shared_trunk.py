"""Split inference with one frozen shared CNN (Hiraga, Nakada, Nakajima): one task head behind the wire.

The edge (VGG16 to pool4, or MobileNetV2 to its 6th inverted residual; frozen, always in ``eval()``) is
shared by every task; this module trains one task's server part on top of it — the rest of the
classifier, or SSD224 (:mod:`models.split_backbones` documents the wiring) — and evaluates it with the
feature codec (:mod:`coding.feature_codec`) on the wire: min–max quantisation, tiling, PNG / WebP /
HEVC at a constant QP (like the paper's BPG) / AVIF. Each task is trained on its own; the MACs the
sharing saves across tasks are counted by ``benchmarks/shared_trunk_macs.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, SumMetric

from callbacks.results_record import ResultsRecord
from coding.feature_codec import FeatureCodec, FeatureImageCodec
from coding.feature_tiling import Layout
from coding.image_codecs import encode_image
from datamodules.voc_eval import VOCMeanAveragePrecision
from lightning_modules.classification_steps import log_classification_eval, top_k_accuracies
from lightning_modules.detection_steps import (
    detection_eval_step,
    detection_training_step,
    log_detection_metrics,
    split_detection_batch,
)
from models.code_classifier import ImageNormalize
from models.latency import measure_ms_per_image
from models.split_backbones import (
    Trunk,
    mac_counts,
    parameter_counts,
    split_classifier,
    split_model,
    split_ssd224,
    split_trunk_of,
)

Task = Literal["classification", "detection"]
STAGES = ("val", "test")
PAPER_INPUT_JPEG_BYTES = 485.44e6 / 50_000
"""The paper's Table 3: 485.44 MB of 224×224 JPEG inputs for the 50,000 ILSVRC-2012 validation images."""
INPUT_JPEG_QUALITY = 70
"""The JPEG quality of the "圧縮率" basis: reproduces :data:`PAPER_INPUT_JPEG_BYTES` (see the class)."""
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
PAPER_PREPROCESS = {
    # eq. 5: (resize(x)·255 − mean) / 255 = x − mean / 255 on x in [0, 1]
    "vgg16": (tuple(m / 255 for m in _CAFFE_MEAN_RGB), (1.0, 1.0, 1.0)),
    # eq. 6: resize(x)·255 / 128 − 1 = (x − 128/255) / (128/255)
    "mobilenet_v2": ((128 / 255,) * 3, (128 / 255,) * 3),
}
"""(mean, std) on [0, 1] images of the paper's preprocessing (eq. 5–6), per trunk."""


class SharedTrunkTask(L.LightningModule):
    """One task's server part trained behind a frozen, shared ImageNet trunk; the feature codec on the wire.

    Logged: ``train/loss`` (detection: also ``train/bbox_regression``, ``train/classification``);
    ``val/`` and ``test/``: ``acc_top1``, ``acc_top5`` (micro-averaged: the fraction of images whose label
    is among the top k) and ``loss`` for classification, ``map50`` (VOC07 11-point, the shared detection
    evaluator) for detection; ``bytes_per_image`` (the whole feature stream — header, min/max and image
    payload — or, without a codec, the raw float32 tensor: 4·C·H·W bytes); ``feature_bytes_ratio``, the
    paper's "圧縮率": 100 × Σ feature bytes / Σ bytes of the network input (the 224×224 image the trunk
    sees) as a baseline JPEG at ``input_jpeg_quality`` (4:2:0, Pillow); ``input_jpeg_bytes``;
    ``source_file_bytes`` and ``feature_bytes_vs_source`` (100 × bytes per image / the mean size of the
    stage's stored source files, when its dataset lists them: ``source_paths()``); and at
    test ``test/params_{edge,server,total}``, ``test/gmacs_{edge,server,total}`` (one image at the
    network input size, wire excluded) and ``test/ms_per_image`` (batch 1, median, no codec).

    The "圧縮率" basis: the paper gives no JPEG quality, but its Table 3 (485.44 MB for the 50,000 ILSVRC
    validation inputs at 224×224) is :data:`PAPER_INPUT_JPEG_BYTES` = 9,709 bytes per input. Quality 70
    (:data:`INPUT_JPEG_QUALITY`) is the quality whose mean size on real photos is closest to it, with
    the paper's plain resize (+7 %) and with resize + centre crop (−0.2 %); 75 (libjpeg's default) is
    +18 % / +10 % (``python benchmarks/input_jpeg_basis.py`` prints the mean bytes per quality). q95
    is ~2.5× larger and would divide every percentage of Tables 6–9 by that.

    Args:
        trunk: shared CNN, ``vgg16`` (split after pool4: 512×14×14 at 224) or ``mobilenet_v2`` (after
            the 6th inverted residual: 32×28×28).
        task: ``classification`` (the rest of the classifier) or ``detection`` (SSD224).
        num_classes: classes (detection: with the background); ``None``: 1000 or 21 (VOC).
        weights: torchvision ImageNet weights of the trunk's *classifier* (``IMAGENET1K_V1``; MobileNetV2
            also ``IMAGENET1K_V2``), downloaded on first use; the edge keeps them frozen, the
            classification head starts from them too (its last layer is new when ``num_classes`` ≠ 1000).
            ``None``: random (tests).
        width: channel multiplier of every layer (< 1 only without ``weights``: CPU demos and tests).
        image_size: detection: the SSD's input side (images are resized to it); both tasks: the side at
            which MACs are counted when no test batch sets it.
        codec: the image codec of the wire: ``hevc`` (constant QP, slice data behind our header, no
            container: what the paper's BPG sends), ``heif`` (the same HEVC in a HEIF container), ``png``,
            ``webp``, ``avif``; or ``None``: the float tensor goes through untouched.
        codec_quality: ``webp``/``avif`` quality 0–100; ``hevc``/``heif`` constant QP 0–51 (the paper's
            qp35 = 35); ``None``: the codec's default (QP 35, quality 80; ``png`` takes none).
        codec_layout: ``r_channel`` (the paper's), ``mono`` or ``square`` tiling.
        codec_bits: min–max quantisation bits (8; 10 for ``png``/``hevc`` grey layouts).
        codec_per_channel: a min/max per channel instead of per tensor (the paper's).
        codec_chroma: ``420`` (BPG's default) or ``444`` for the ``r_channel`` image (``hevc``/``avif``).
        codec_in_training: also pass the training batches through the codec (default: train on clean
            features, evaluate through the codec, as the paper).
        input_jpeg_quality: JPEG quality of the input-size baseline of ``feature_bytes_ratio`` (70:
            reproduces the paper's Table 3, see above).
        preprocess: ``torchvision`` (the default, for torchvision's weights: ImageNet mean/std on [0, 1]
            images) or ``paper`` (eq. 5–6, for the paper's weights: VGG16 as Caffe, x − mean/255 with the
            Caffe mean (123.68, 116.779, 103.939) in RGB order; MobileNetV2 as TensorFlow, 255·x/128 − 1).
            The paper also resizes plainly to 224×224: give the ImageNet data
            ``eval_resize: plain`` (detection: the SSD always resizes plainly).
        lr: SGD learning rate (the paper's Table 1: 0.01 classification, 0.001 detection).
        momentum: SGD momentum (MomentumSGD; 0.9).
        weight_decay: L2 weight decay of SGD. Default 5e-4 (Caffe VGG16's and SSD's); the paper's Table 1
            prints 0.1, which as L2 at lr 0.01 shrinks every weight by (1 − lr·wd) per step, e^−10 per ImageNet
            epoch (10k steps at batch 128; e^−100 with momentum 0.9's steady state) and cannot give its
            68–70 % — kept selectable (``weight_decay: 0.1``); see the README.
        lr_schedule: ``constant`` (the paper gives no schedule) or ``cosine`` to 0 over the run.
        threads: torch's intra-op threads for this run (set at ``setup``); ``None`` keeps torch's default,
            the machine's physical cores. A seeded CPU run repeats bit for bit on one machine, but the float
            sums of oneDNN's convolution backward depend on the thread count (and on the CPU's vector ISA),
            so a run that must repeat on another machine pins it (the demo: 2).
        latency_warmup: untimed batch-1 runs before ``test/ms_per_image``.
        latency_repeats: timed runs for ``test/ms_per_image``; 0 skips it.
    """

    def __init__(
        self,
        trunk: Trunk = "vgg16",
        task: Task = "classification",
        num_classes: int | None = None,
        weights: str | None = None,
        width: float = 1.0,
        image_size: int = 224,
        codec: FeatureImageCodec | None = None,
        codec_quality: int | None = None,
        codec_layout: Layout = "r_channel",
        codec_bits: int = 8,
        codec_per_channel: bool = False,
        codec_chroma: Literal["420", "444"] = "420",
        codec_in_training: bool = False,
        input_jpeg_quality: int = INPUT_JPEG_QUALITY,
        preprocess: Literal["torchvision", "paper"] = "torchvision",
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        threads: int | None = None,
        latency_warmup: int = 5,
        latency_repeats: int = 30,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if task not in ("classification", "detection"):
            raise ValueError(f"task must be 'classification' or 'detection', got {task!r}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        if not 1 <= input_jpeg_quality <= 100:
            raise ValueError(f"input_jpeg_quality must be in 1..100, got {input_jpeg_quality}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        if preprocess not in ("torchvision", "paper"):
            raise ValueError(f"preprocess must be 'torchvision' or 'paper', got {preprocess!r}")
        self.codec: FeatureCodec | None = None
        if codec is not None:
            self.codec = FeatureCodec(codec, codec_quality, codec_layout, codec_bits, codec_per_channel, codec_chroma)
        elif codec_in_training:
            raise ValueError("codec_in_training needs a codec")
        self.is_detection = task == "detection"
        classes = num_classes if num_classes is not None else (21 if self.is_detection else 1000)
        if self.is_detection:
            self.model: nn.Module = split_ssd224(trunk, classes, weights, width, image_size)
            self.map = nn.ModuleDict({s: VOCMeanAveragePrecision() for s in STAGES})
        else:
            self.model = split_classifier(trunk, classes, weights, width)
            self.acc_top1, self.acc_top5 = top_k_accuracies(classes, STAGES)
        if preprocess == "paper":
            mean, std = PAPER_PREPROCESS[trunk]
            if self.is_detection:
                self.model.transform.image_mean, self.model.transform.image_std = list(mean), list(std)
            else:
                self.model.normalize = ImageNormalize(mean, std)
        self.split.edge.requires_grad_(False)
        self.split.edge.eval()
        self.feature_bytes = nn.ModuleDict({s: SumMetric() for s in STAGES})
        self.jpeg_bytes = nn.ModuleDict({s: SumMetric() for s in STAGES})
        self.images = nn.ModuleDict({s: SumMetric() for s in STAGES})
        self.bytes_per_image = nn.ModuleDict({s: MeanMetric() for s in STAGES})
        self._test_size: tuple[int, int] | None = None
        self._source_bytes: dict[int, float | None] = {}

    # ----------------------------------------------------------------------------------- set-up
    @property
    def split(self) -> nn.Module:
        """The part of ``model`` holding the shared ``edge`` and the ``wire`` (not a second registration,
        which would store every weight twice in the checkpoint)."""
        return split_trunk_of(self.model)

    def train(self, mode: bool = True) -> SharedTrunkTask:
        """Like ``nn.Module.train``, but the shared edge stays in ``eval()`` (BatchNorm statistics frozen)."""
        super().train(mode)
        if "model" in self._modules:
            self.split.edge.eval()
        return self

    def setup(self, stage: str) -> None:
        if self.hparams.threads is not None:
            torch.set_num_threads(self.hparams.threads)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters ``{"edge", "server", "total"}``."""
        return parameter_counts(self.model)

    def configure_callbacks(self) -> list:
        hp = self.hparams
        return [ResultsRecord(latency_warmup=hp.latency_warmup, latency_repeats=hp.latency_repeats)]

    def results_info(self, stage: str) -> dict[str, Any]:
        """The setting and the split accounting (wire off: a codec is not a network), for
        :class:`callbacks.results_record.ResultsRecord`."""
        hp = self.hparams
        self.split.wire.codec = None  # set again by the next step
        setting = f"{hp.trunk} {self.codec.name if self.codec is not None else 'float32'}"
        return {
            "method": "shared_trunk",
            "setting": setting,
            "codec": hp.codec,
            "split": split_model(self.model),
            "input_size": (hp.image_size, hp.image_size) if self.is_detection else None,
        }

    def _wire(self, stage: str) -> None:
        use = stage != "train" or self.hparams.codec_in_training
        self.split.wire.codec = self.codec if use else None

    def forward(self, images: Tensor | list[Tensor]) -> Any:
        return self.model(images)

    @staticmethod
    def _classification_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
        if isinstance(batch, Tensor):
            return batch, None
        return batch[0], (batch[1] if len(batch) > 1 else None)

    # ------------------------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self._wire("train")
        if self.is_detection:
            return detection_training_step(self, self.model, batch)
        images, labels = self._classification_batch(batch)
        loss = F.cross_entropy(self.model(images), labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def _count_bytes(self, images: Tensor | list[Tensor], stage: str) -> None:
        sizes = self.split.wire.last_sizes
        if not sizes:  # no codec: the raw float32 tensor
            shape = self._sent_shape
            sizes = [4 * shape[0] * shape[1] * shape[2]] * len(images)
        jpeg = [len(encode_image(image.clamp(0, 1), "jpeg", self.hparams.input_jpeg_quality)) for image in images]
        for size in sizes:
            self.bytes_per_image[stage].update(size)
        self.feature_bytes[stage].update(float(sum(sizes)))
        self.jpeg_bytes[stage].update(float(sum(jpeg)))
        self.images[stage].update(float(len(jpeg)))

    def _record_sent_shape(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        self._sent_shape = tuple(output.shape[1:])

    def _evaluate(self, batch: Any, stage: str) -> None:
        self._wire(stage)
        handle = self.split.edge.register_forward_hook(self._record_sent_shape)
        try:
            if self.is_detection:
                out = detection_eval_step(self.model, batch, self.map[stage])
                images = out["images"]
                # the network input: the SSD resizes every image to image_size first
                images = [
                    F.interpolate(im[None], size=(self.hparams.image_size,) * 2, mode="bilinear", align_corners=False)[
                        0
                    ]
                    if tuple(im.shape[-2:]) != (self.hparams.image_size,) * 2
                    else im
                    for im in images
                ]
            else:
                images, labels = self._classification_batch(batch)
                log_classification_eval(self, self.model(images), labels, stage)
        finally:
            handle.remove()
        self._count_bytes(images, stage)

    def _log_epoch(self, stage: str) -> None:
        if self.is_detection:
            log_detection_metrics(self, self.map[stage], stage)
        if self.images[stage].update_count == 0:
            return
        feature, jpeg = self.feature_bytes[stage].compute(), self.jpeg_bytes[stage].compute()
        per_image = self.bytes_per_image[stage].compute()
        metrics = {
            f"{stage}/bytes_per_image": per_image,
            f"{stage}/input_jpeg_bytes": jpeg / self.images[stage].compute(),
            f"{stage}/feature_bytes_ratio": 100 * feature / jpeg,
        }
        source = self._source_file_bytes(stage)
        if source:
            metrics[f"{stage}/source_file_bytes"] = source
            metrics[f"{stage}/feature_bytes_vs_source"] = 100 * float(per_image) / source
        self.log_dict(metrics)
        for metric in (self.bytes_per_image, self.feature_bytes, self.jpeg_bytes, self.images):
            metric[stage].reset()

    def _source_file_bytes(self, stage: str) -> float | None:
        """Mean size of the stored source files of the stage's dataset (every file it lists), or ``None``."""
        if self._trainer is None:
            return None
        loaders = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        dataset = getattr(loader, "dataset", None)
        if id(dataset) not in self._source_bytes:  # one stat per file per dataset, not per epoch
            paths = _source_paths(dataset)
            sizes = [Path(path).stat().st_size for path in paths or ()]
            self._source_bytes[id(dataset)] = sum(sizes) / len(sizes) if sizes else None
        return self._source_bytes[id(dataset)]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        if self._test_size is None and not self.is_detection:
            self._test_size = tuple(self._classification_batch(batch)[0].shape[-2:])
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        metrics: dict[str, float] = {f"test/params_{k}": float(v) for k, v in self.parameter_counts().items()}
        size = self._test_size or (self.hparams.image_size,) * 2
        example = torch.rand(1, 3, *size, device=self.device)
        was_training = self.model.training
        self.model.eval()
        metrics.update({f"test/gmacs_{k}": v / 1e9 for k, v in mac_counts(self.model, example).items()})
        if self.hparams.latency_repeats > 0:
            self.split.wire.codec = None
            runner = _BatchOne(self.model) if self.is_detection else self.model
            metrics["test/ms_per_image"] = measure_ms_per_image(
                runner, example, self.hparams.latency_warmup, self.hparams.latency_repeats
            )
        self.model.train(was_training)
        self.log_dict(metrics)
        self._test_size = None

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """Classification: ``{"probs", "labels"}``; detection: one ``{"boxes", "scores", "labels"}`` per image."""
        self._wire("predict")
        if self.is_detection:
            images, _ = split_detection_batch(batch)
            return self.model(images)
        images, _ = self._classification_batch(batch)
        probs = self.model(images).softmax(dim=1)
        return {"probs": probs, "labels": probs.argmax(dim=1)}

    # -------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        if hp.lr_schedule == "constant":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _source_paths(dataset: Any) -> list[Path] | None:
    """The stored files of a dataset that lists them (``source_paths()``), through wrappers (``.dataset``)
    and concatenations (``.datasets``); ``None`` when it does not."""
    if dataset is None:
        return None
    if hasattr(dataset, "source_paths"):
        return list(dataset.source_paths())
    if hasattr(dataset, "datasets"):
        parts = [_source_paths(part) for part in dataset.datasets]
        return None if any(part is None for part in parts) else [p for part in parts for p in part]
    return _source_paths(getattr(dataset, "dataset", None))


class _BatchOne(nn.Module):
    """An SSD called on a batch-1 tensor (its eval forward takes a list of images)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Any:
        return self.model(list(images))
