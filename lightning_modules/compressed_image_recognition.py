"""Recognition on images decoded from a compressor's bits (Takase, Toya, Nishikata, Yamauchi,
"エッジコンピューティングのための圧縮画像認識").

The device sends only the bits of each image; the server decodes them and recognises the decoded
image: ResNet-50 classification (ImageNet-10) or MobileNet-SSD detection (VOC2007). The wire is the
frozen recurrent compressor (``RNNCompressor``) at k iterations — the real bitstream,
``decompress(compress(x, k))`` of each whole source image at its own resolution, as the paper's file
sizes imply — or, to answer "which is better at the same bytes?", a classical codec
(JPEG / WebP / AVIF / HEVC) at the bytes the learned compressor spent on the same image.

The paper's three regimes (its §4.2) and ours:

============================  ==========================  =============  ============
paper                         ours (``regime``)           ``train_on``   ``eval_on``
============================  ==========================  =============  ============
従来法                         ``conventional``            original       original
提案手法 (未圧縮画像モデル)      ``uncompressed_image_model``  compressed     original
提案手法 (圧縮画像モデル)        ``compressed_image_model``    compressed     compressed
(not in the paper)            ``original_on_compressed``   original       compressed
============================  ==========================  =============  ============

The middle row is as the paper's list defines it ("圧縮学習画像 + 未圧縮評価画像"), although its name
("uncompressed-image model") would rather describe a model trained on original images; the fourth
combination, a model trained on originals that is fed decoded images, is that one, and is offered
for that reason.

Data (:class:`datamodules.decoded_datasets.DecodedDatasets`, which takes this module's frozen compressor).
Compression happens before any augmentation or resizing: each source file is decoded once through the channel
into a cache on disk (:mod:`datamodules.decoded_cache`, keyed on the channel's settings including the SHA-256 of
the compressor's weights; every entry verified — record, size, content hash — before each fit / validate / test,
and rebuilt when missing or wrong), and the DataModule's datasets then read the decoded images instead of the
sources (their ``image_loader``) and apply their usual transforms. With ``decoded_cache_dir=None`` the images are
decoded again whenever they are read (same images and bytes; ``benchmarks/decoded_cache_throughput.py`` measures
what that costs). Works with any DataModule whose datasets have ``source_paths()`` and ``image_loader``
(``ImageNetSubset``, ``VOC``).

Bytes (logged at the end of every validation / test epoch, over the whole evaluation set, whatever
``limit_val_batches``): ``{stage}/bytes_per_image`` — mean bytes actually sent per image: the stream's
length (its header included) or the codec file's, and the source file's size when ``eval_on`` is
``original``; ``{stage}/source_bytes_per_image`` — mean size of the source files (the JPEGs as
stored: the paper's "元画像" column of its Table 1); ``{stage}/data_reduction`` — ``1 − Σ bytes /
Σ source bytes``, the fraction of data saved against sending the source JPEGs, the basis of the
paper's Table 1 (65.5 kB → 3.00 kB is a reduction of 0.954); ``{stage}/bpp`` — ``8 Σ bytes / Σ
pixels`` of the source images. With a classical channel matched to bytes,
``{stage}/over_budget_fraction`` counts images whose codec file exceeds the budget even at its lowest
quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn

from callbacks.results_record import ResultsRecord
from coding.image_channel import CLASSICAL, ChannelName, ClassicalChannel
from coding.rnn_bitstream import Coding
from datamodules.decoded_cache import DecodedImageCache
from datamodules.decoded_datasets import STAGE_ROLES, DecodedDatasets
from datamodules.voc_eval import VOCMeanAveragePrecision
from lightning_modules.checkpoint_init import InitReport, ParentInit, init_weights_from
from lightning_modules.classification_steps import log_classification_eval, top_k_accuracies
from lightning_modules.data_checks import check_class_count
from lightning_modules.detection_steps import (
    detection_eval_step,
    detection_training_step,
    log_detection_metrics,
    split_detection_batch,
)
from models.classifiers import build_classifier
from models.decoded_split import DecodedImageSplit, image_split
from models.rnn_codec import CellType, Reconstruction, RNNCodec
from models.ssd import Arch, build_ssd

Task = Literal["classification", "detection"]
Images = Literal["original", "compressed"]

REGIMES: dict[tuple[str, str], tuple[str, str]] = {
    ("original", "original"): ("conventional", "従来法"),
    ("compressed", "original"): ("uncompressed_image_model", "提案手法 (未圧縮画像モデル)"),
    ("compressed", "compressed"): ("compressed_image_model", "提案手法 (圧縮画像モデル)"),
    ("original", "compressed"): ("original_on_compressed", "(not in the paper)"),
}
"""(train_on, eval_on) → (our regime name, the paper's name)."""

COMPRESSOR_PREFIX = "compressor."
_FN_STAGE = {TrainerFn.VALIDATING: "validate", TrainerFn.TESTING: "test", TrainerFn.PREDICTING: "predict"}


class CompressedImageRecognition(L.LightningModule):
    """A recogniser trained and evaluated on original or decoded images (see the module docstring).

    Logged: ``train/loss``; classification: ``{val,test}/loss``, ``{val,test}/acc_top1``,
    ``{val,test}/acc_top5`` (micro-averaged: the fraction of images); detection: ``train/bbox_regression``,
    ``train/classification``, ``{val,test}/map50`` (VOC07 11-point) and ``map50_area`` (the per-class
    table at test); both: ``{val,test}/bytes_per_image``, ``source_bytes_per_image``,
    ``data_reduction``, ``bpp`` (+ ``over_budget_fraction`` for classical channels matched to bytes). At the
    end of each validation and test, the setting (:meth:`run_summary`) and these metrics go to
    ``<run dir>/results/{val,test}.json`` in the one results schema (:class:`callbacks.results_record.ResultsRecord`,
    read by ``benchmarks/decoded_recognition_report.py`` and ``benchmarks/split_report.py``), which also logs
    ``test/params_{edge,server,total}``, ``test/gmacs_{edge,server,total}``, ``test/ms_edge``, ``test/ms_server``
    and ``test/ms_per_image`` through the one split accounting (:meth:`results_info`).

    Args:
        task: ``classification`` (torchvision classifier, ``arch``) or ``detection`` (``detector_arch``, built,
            trained and evaluated as ``Detector`` does: the same builder, losses and VOC07 mAP).
        num_classes: classes (detection: with the background, 21 for VOC).
        train_on: images the recogniser is trained on, ``original`` (the source files) or ``compressed``
            (decoded from the channel).
        eval_on: images it is validated, tested and run on.
        channel: the wire: ``rnn`` (the recurrent compressor) or a classical codec ``jpeg``, ``webp``,
            ``avif``, ``hevc``.
        iterations: k, the compressor's iterations sent (``rnn``); for a classical channel matched to
            bytes, the k whose bytes each image may spend.
        quality: classical channel: one quality for every image (instead of matching bytes).
        target_bpp: classical channel: a budget of ``target_bpp`` bits per source pixel per image.
            With neither ``quality`` nor ``target_bpp`` each image gets the bytes the recurrent
            compressor spent on it at k iterations (per-image quality search, :mod:`coding.matched_rate`).
        stream_coding: payload of the recurrent codec's stream: ``packed`` (the paper's k · bits / 256 bpp),
            ``entropy`` (rANS) or ``smallest`` (the smaller of the two per image).
        codec_width: width of the compressor; must equal the ``RNNCompressor`` checkpoint's.
        codec_cell: recurrent unit of the compressor, ``lstm`` or ``gru``.
        bits: code channels per 16×16 block and iteration.
        codec_reconstruction: ``additive`` or ``one_shot``.
        init_compressor_from: ``RNNCompressor`` checkpoint of the frozen compressor. Read once, when a
            fit starts from scratch (and for evaluation without a checkpoint of this model); its weights
            are then part of this run's checkpoints, so resuming or testing never needs the file again.
            Not needed when nothing is compressed (``conventional``).
        decoded_cache_dir: folder of the decoded-image caches, shared by runs and regimes; ``None`` decodes every
            image again whenever it is read (in the DataLoader workers, codec on the CPU; the evaluation images'
            bytes are measured once per run) — slower, nothing on disk.
        cache_workers: worker processes that build a cache (they run classical codecs, and the
            recurrent codec when the model is on the CPU; on a GPU the codec runs in this process).
        arch: torchvision classifier (``resnet50`` in the paper; any name ``torchvision.models.get_model``
            knows whose classifier is ``fc``, e.g. ``resnet18``, or ``shufflenet_v2_x0_5`` for tests), built by
            :func:`models.classifiers.build_classifier`.
        weights: torchvision weights of ``arch`` (``IMAGENET1K_V1``, ``IMAGENET1K_V2``; downloaded on first
            use) or ``None`` (random initialisation). The classifier layer is new when ``num_classes`` ≠ 1000.
        detector_arch: ``ssdlite_mobilenet_v2`` (MobileNetV2-SSDLite, our stand-in for the paper's MobileNet-SSD,
            see :func:`models.ssd.ssdlite320_mobilenet_v2`) or ``ssd300_vgg16`` (:func:`models.ssd.build_ssd`).
        detector_width: MobileNetV2 width multiplier of the detector.
        detector_weights_backbone: ImageNet weights of the detector's backbone (``IMAGENET1K_V1``) or ``None``.
        detector_image_size: input side of the SSD (320 for SSDLite320; images are resized inside).
        detector_bn_momentum: BatchNorm momentum of the SSDLite (0.03 as torchvision; ~0.1 for short runs).
        optimizer: ``sgd`` (momentum) or ``adamw``.
        lr: peak learning rate; linear warm-up for ``warmup_steps`` then cosine decay to 0 over
            ``trainer.estimated_stepping_batches``.
        weight_decay: weight decay.
        momentum: SGD momentum.
        warmup_steps: optimizer steps of linear warm-up.
        label_smoothing: cross-entropy label smoothing (classification).
    """

    def __init__(
        self,
        task: Task = "classification",
        num_classes: int = 10,
        train_on: Images = "compressed",
        eval_on: Images = "compressed",
        channel: ChannelName = "rnn",
        iterations: int = 1,
        quality: int | None = None,
        target_bpp: float | None = None,
        stream_coding: Coding = "packed",
        codec_width: float = 1.0,
        codec_cell: CellType = "lstm",
        bits: int = 32,
        codec_reconstruction: Reconstruction = "additive",
        init_compressor_from: str | None = None,
        decoded_cache_dir: str | None = "data/decoded_cache",
        cache_workers: int = 4,
        arch: str = "resnet50",
        weights: str | None = None,
        detector_arch: Arch = "ssdlite_mobilenet_v2",
        detector_width: float = 1.0,
        detector_weights_backbone: str | None = None,
        detector_image_size: int = 320,
        detector_bn_momentum: float = 0.03,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.01,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        warmup_steps: int = 0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if task not in ("classification", "detection"):
            raise ValueError(f"task must be 'classification' or 'detection', got {task!r}")
        for name, value in (("train_on", train_on), ("eval_on", eval_on)):
            if value not in ("original", "compressed"):
                raise ValueError(f"{name} must be 'original' or 'compressed', got {value!r}")
        if channel != "rnn" and channel not in CLASSICAL:
            raise ValueError(f"channel must be 'rnn' or one of {CLASSICAL}, got {channel!r}")
        if channel == "rnn" and (quality is not None or target_bpp is not None):
            raise ValueError("quality and target_bpp are for classical channels; the rnn channel spends k iterations")
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive int, got {iterations!r}")
        if cache_workers < 0:
            raise ValueError(f"cache_workers must be >= 0, got {cache_workers}")
        self.classical = ClassicalChannel(channel, quality, target_bpp) if channel != "rnn" else None
        self.regime, self.paper_regime = REGIMES[(train_on, eval_on)]
        self.compressor = RNNCodec(cell=codec_cell, width=codec_width, bits=bits, reconstruction=codec_reconstruction)
        self.compressor.requires_grad_(False)
        self.compressor.eval()
        self._compressor_ready = False
        self.parent_init = ParentInit(self, init_compressor_from, CompressedImageRecognition.load_compressor)
        if task == "classification":
            self.recogniser = build_classifier(arch, num_classes, weights)
            self.acc_top1, self.acc_top5 = top_k_accuracies(num_classes)
        else:
            self.recogniser = build_ssd(
                detector_arch,
                num_classes,
                detector_image_size,
                width_mult=detector_width,
                weights_backbone=detector_weights_backbone,
                bn_momentum=detector_bn_momentum,
            )
            self.map = nn.ModuleDict({s: VOCMeanAveragePrecision() for s in ("val", "test")})
        self.decoded_data = DecodedDatasets(
            {"train": train_on, "eval": eval_on}, iterations, stream_coding, self.classical, decoded_cache_dir,
            cache_workers,
        )  # fmt: skip
        self._loaded_progress: dict[str, int | None] = {}

    # ------------------------------------------------------------------------ frozen compressor
    def train(self, mode: bool = True) -> CompressedImageRecognition:
        """Like ``nn.Module.train``, but the compressor stays in ``eval()`` (sign binarizer)."""
        super().train(mode)
        self.compressor.eval()
        return self

    def load_compressor(self, path: str) -> InitReport:
        """Copy an ``RNNCompressor`` checkpoint's codec into the frozen compressor (weights only)."""
        report = init_weights_from(self.compressor, path, key_map={"codec.": ""})
        self._compressor_ready = True
        return report

    def configure_callbacks(self) -> list:
        return [self.parent_init, ResultsRecord(log_costs=True)]

    def results_info(self, stage: str) -> dict[str, Any]:
        """The setting, :meth:`run_summary` and the split accounting (rnn: edge = encoder + binarizer, server
        = decoder + recogniser; a classical codec or original images: the recogniser alone), for
        :class:`callbacks.results_record.ResultsRecord`."""
        hp = self.hparams
        compressed = self._images_for(stage) == "compressed"
        split, k = image_split(self.recogniser), None
        if not compressed:
            setting = "original"
        elif hp.channel == "rnn":
            split, k = DecodedImageSplit(self.compressor, hp.iterations, self.recogniser).split_model(), hp.iterations
            setting = f"rnn k={hp.iterations}"
        elif hp.quality is not None:
            setting = f"{hp.channel} q={hp.quality}"
        elif hp.target_bpp is not None:
            setting = f"{hp.channel} bpp={hp.target_bpp}"
        else:  # matched to the bytes of the compressor at k
            k, setting = hp.iterations, f"{hp.channel} at rnn k={hp.iterations} bytes"
        return {
            "method": "decoded_images",
            "setting": setting,
            "k": k,
            "codec": hp.channel if compressed else None,
            "split": split,
            "details": self.run_summary(stage),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The compressor comes from this run's own checkpoint (never from ``init_compressor_from`` again);
        loaded here, before Lightning loads the rest, so evaluation decodes with exactly these weights."""
        self._loaded_progress = {"epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step")}
        state = checkpoint.get("state_dict", {})
        own = {k[len(COMPRESSOR_PREFIX) :]: v for k, v in state.items() if k.startswith(COMPRESSOR_PREFIX)}
        if own:
            self.compressor.load_state_dict(own)
            self._compressor_ready = True
        trainer = self._trainer
        stage = _FN_STAGE.get(trainer.state.fn) if trainer is not None else None
        if stage is not None and trainer.datamodule is not None:
            self._prepare(stage)

    def _ensure_compressor(self, required: bool) -> None:
        if self._compressor_ready:
            return
        path = self.hparams.init_compressor_from
        if path and Path(path).is_file():
            self.parent_init.apply(self)  # once; recorded as the run's parent in its checkpoints
        elif required:
            where = f"init_compressor_from={path!r} does not exist" if path else "init_compressor_from is not set"
            raise FileNotFoundError(
                f"the {self.regime} regime decodes images through the compressor, but {where} and no checkpoint of "
                "this model was given (ckpt_path): set init_compressor_from to an RNNCompressor checkpoint"
            )

    # ---------------------------------------------------------------------- decoded datasets
    @property
    def uses_compressor(self) -> bool:
        """Whether decoded images depend on the compressor (rnn, or a classical codec matched to its bytes)."""
        return self.decoded_data.uses_compressor

    @property
    def rates(self) -> dict[str, dict[str, float]]:
        """Evaluation role → bytes of its images (:func:`datamodules.decoded_datasets.rate_summary`)."""
        return self.decoded_data.rates

    def _images_for(self, role: str) -> str:
        return self.decoded_data.images_for(role)

    def channels(self, cpu_copy: bool = False) -> list[Any]:
        """The channels an image goes through, with this module's compressor (:meth:`DecodedDatasets.channels`)."""
        return self.decoded_data.channels(self.compressor, cpu_copy)

    def caches(self) -> list[tuple[DecodedImageCache, Any]]:
        """(cache, channel) in build order, with this module's compressor (:meth:`DecodedDatasets.caches`)."""
        return self.decoded_data.caches(self.compressor)

    def _prepare(self, stage: str) -> None:
        """Point the datasets of ``stage`` at original or decoded images and measure their bytes."""
        self._ensure_compressor(required=self.decoded_data.compresses(stage) and self.uses_compressor)
        trainer = self.trainer
        self.decoded_data.prepare(
            trainer.datamodule, stage, self.compressor, trainer.global_rank, trainer.world_size,
            trainer.strategy.barrier,
        )  # fmt: skip

    def setup(self, stage: str) -> None:
        check_class_count(self.hparams.num_classes, self.trainer)
        if stage != "fit":
            self._ensure_compressor(required=False)
            if self._compressor_ready or not self.uses_compressor or self._only_originals(stage):
                self._prepare(stage)

    def _only_originals(self, stage: str) -> bool:
        return not self.decoded_data.compresses(stage)

    def on_fit_start(self) -> None:
        self._prepare("fit")

    def _check_prepared(self, stage: str) -> None:
        for role in STAGE_ROLES[stage]:
            if role not in self.decoded_data.prepared:
                self._ensure_compressor(required=self.uses_compressor)
                raise RuntimeError(f"the {role} images were not prepared before the {stage} loop started")

    def on_validation_start(self) -> None:
        self._check_prepared("validate")

    def on_test_start(self) -> None:
        self._check_prepared("test")

    def on_predict_start(self) -> None:
        self._check_prepared("predict")

    # ------------------------------------------------------------------------------- steps
    def forward(self, images: Tensor | list[Tensor]) -> Any:
        """The recogniser on (decoded or original) images in [0, 1]: logits, or SSD detections."""
        return self.recogniser(images)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self.hparams.task == "detection":
            return detection_training_step(self, self.recogniser, batch)
        images, labels = batch
        loss = F.cross_entropy(self(images), labels, label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def _evaluate(self, batch: Any, stage: str) -> None:
        if self.hparams.task == "detection":
            detection_eval_step(self.recogniser, batch, self.map[stage])
            return
        images, labels = batch
        log_classification_eval(self, self(images), labels, stage)

    def _log_epoch(self, stage: str) -> None:
        if self.hparams.task == "detection":
            names = getattr(self.trainer.datamodule, "class_names", None)
            log_detection_metrics(self, self.map[stage], stage, names, per_class=stage == "test")
        rates = dict(self.rates[stage])
        if self.classical is None or not self.classical.needs_budget or self._images_for(stage) == "original":
            rates.pop("over_budget_fraction")
        self.log_dict({f"{stage}/{name}": float(value) for name, value in rates.items()}, sync_dist=True)

    def run_summary(self, stage: str) -> dict[str, Any]:
        """What a report needs of a finished evaluation: the setting, and the ``{stage}/…`` metrics."""
        hp = self.hparams
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith(f"{stage}/")}
        fitting = self.trainer.state.fn == TrainerFn.FITTING
        return {
            "task": hp.task,
            "regime": self.regime,
            "paper_regime": self.paper_regime,
            "train_on": hp.train_on,
            "eval_on": hp.eval_on,
            "channel": hp.channel,
            "iterations": hp.iterations,
            "quality": hp.quality,
            "target_bpp": hp.target_bpp,
            "stream_coding": hp.stream_coding,
            "arch": hp.arch if hp.task == "classification" else hp.detector_arch,
            "epoch": self.current_epoch if fitting else self._loaded_progress.get("epoch"),
            "global_step": self.global_step if fitting else self._loaded_progress.get("global_step"),
            "checkpoint": None if fitting or self.trainer.ckpt_path is None else str(self.trainer.ckpt_path),
            "metrics": metrics,
        }

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """Classification: ``{"probs", "labels"}``; detection: one ``{"boxes", "scores", "labels"}`` per image."""
        if self.hparams.task == "detection":
            images, _ = split_detection_batch(batch)
            return self.recogniser(images)
        images = batch[0] if isinstance(batch, list | tuple) else batch
        probs = self(images).softmax(dim=1)
        return {"probs": probs, "labels": probs.argmax(dim=1)}

    # ---------------------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> dict:
        hp = self.hparams
        params = [p for p in self.recogniser.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(hp.warmup_steps, total - 1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
        scheduler: torch.optim.lr_scheduler.LRScheduler = cosine
        if warmup > 0:
            ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
            scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
