"""Object detection on PASCAL VOC: an SSD built from torchvision's parts, trained and evaluated.

The detector shared by two of splitcv's methods: recognition on images decoded by the recurrent
compressor (MobileNet-SSD, VOC2007) and the shared-trunk split (SSD224 heads over frozen features).
Models come from :mod:`models.ssd`; the steps and metrics from :mod:`lightning_modules.detection_steps`,
which other LightningModules reuse.

Published numbers the configs aim at (VOC2007 test, VOC07 11-point mAP, trained on VOC07+12 trainval):
SSD300 VGG16 77.2 (Liu et al. 2016, with the zoom-out augmentation); MobileNetV2-SSDLite 68.6–68.9
(public PyTorch recipes).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from datamodules.voc_eval import ElevenPoint, VOCMeanAveragePrecision
from lightning_modules.checkpoint_init import ParentInit, init_weights_from
from lightning_modules.detection_steps import (
    detection_eval_step,
    detection_training_step,
    log_detection_metrics,
    split_detection_batch,
)
from lightning_modules.schedules import warmup_cosine, warmup_multistep
from models.ssd import Arch, build_ssd, trunk_modules


class Detector(L.LightningModule):
    """SSD training on VOC: torchvision's SSD losses, VOC07 mAP, per-class AP at test, box grids.

    Logged: ``train/loss`` (= ``train/bbox_regression`` + ``train/classification``, torchvision's SSD
    losses), ``val/map50`` (VOC07 11-point mAP at IoU 0.5, py-faster-rcnn's thresholds — the papers'
    number), ``val/map50_area`` (VOC2010+ area), ``val/map50_torchmetrics`` (torchmetrics' COCO-style
    101-point mAP@0.5) with ``compare_torchmetrics``; the same under ``test/`` plus ``test/ap50_{class}``
    and a per-class table (console, ``plots/test_ap_per_class.csv``, W&B). ``validation_step`` returns the
    detections of its batch for :class:`callbacks.detection_grid.DetectionGridLogger`. ``predict``
    returns, per image, ``{"boxes" (N, 4) xyxy pixels, "scores" (N,), "labels" (N,)}``.

    Args:
        arch: ``ssd300_vgg16`` (torchvision's SSD300) or ``ssdlite_mobilenet_v2`` (MobileNetV2-SSDLite).
        num_classes: classes including the background (21 for VOC).
        image_size: side of the square network input (300 for SSD300, 320 for SSDLite); the
            DataModule should resize to the same size.
        width_mult: MobileNetV2 channel multiplier (ssdlite only; tiny values for CPU demos).
        weights_backbone: ImageNet backbone weights by torchvision enum name (``IMAGENET1K_FEATURES`` for
            VGG16 as in the SSD paper, ``IMAGENET1K_V1`` for MobileNetV2; downloaded on first use);
            ``None``: random initialisation.
        bn_momentum: BatchNorm momentum (ssdlite; torchvision's 0.03 for long runs, ~0.1 for short demos).
        freeze_backbone: keep the pretrained part of the backbone (``models.ssd.trunk_modules``: VGG16's
            conv layers, MobileNetV2's layers) fixed: no gradient, and in ``eval()`` even under
            ``.train()`` so its BatchNorm statistics do not move.
        freeze_batchnorm: keep every BatchNorm of that part in ``eval()`` (statistics fixed) while its
            weights train, as usual when fine-tuning a pretrained backbone with small batches.
        skip_difficult: leave ``difficult`` objects out of the training loss (the VOC evaluation
            ignores them).
        score_thresh: smallest class score kept before NMS (``None``: the builder's, 0.01 / 0.001).
        nms_thresh: IoU of the per-class NMS (``None``: the builder's, 0.45 / 0.55).
        detections_per_img: detections kept per image after NMS (``None``: the builder's, 200 / 300).
        optimizer: ``sgd`` (momentum, the SSD recipe) or ``adamw``.
        lr: peak learning rate.
        momentum: SGD momentum.
        weight_decay: L2 (SGD) or decoupled (AdamW) weight decay.
        lr_schedule: ``multistep`` (× ``lr_gamma`` at each of ``lr_milestones``, in optimizer steps: the SSD
            paper's 80k / 100k) or ``cosine`` (to 0 over ``trainer.estimated_stepping_batches``).
        lr_milestones: optimizer steps of the multistep decays.
        lr_gamma: multistep decay factor.
        warmup_steps: linear learning-rate warm-up steps (from lr / 1000).
        eleven_point: 11-point thresholds of ``map50``: ``voc_eval`` (py-faster-rcnn, published
            convention) or ``exact`` (k/10).
        compare_torchmetrics: also log torchmetrics' COCO-style mAP@0.5 (needs pycocotools or
            faster-coco-eval).
        class_names: names by label (index 0 = background) for tables and drawings; ``None``: the
            DataModule's ``class_names`` when it has them.
        init_from: fine-tune from another ``Detector`` checkpoint of the same architecture and class count
            (weights only, keys checked and reported; a new run). Loaded once when the run starts, never
            on resume or ``load_from_checkpoint`` (``checkpoint["parent"]`` records it).
    """

    def __init__(
        self,
        arch: Arch = "ssdlite_mobilenet_v2",
        num_classes: int = 21,
        image_size: int = 320,
        width_mult: float = 1.0,
        weights_backbone: str | None = None,
        bn_momentum: float = 0.03,
        freeze_backbone: bool = False,
        freeze_batchnorm: bool = False,
        skip_difficult: bool = True,
        score_thresh: float | None = None,
        nms_thresh: float | None = None,
        detections_per_img: int | None = None,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        lr_schedule: Literal["multistep", "cosine"] = "multistep",
        lr_milestones: list[int] | None = None,
        lr_gamma: float = 0.1,
        warmup_steps: int = 0,
        eleven_point: ElevenPoint = "voc_eval",
        compare_torchmetrics: bool = False,
        class_names: list[str] | None = None,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background too: at least 2, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for num_classes={num_classes} (background first)")
        if lr <= 0 or warmup_steps < 0:
            raise ValueError(f"lr must be > 0 and warmup_steps >= 0, got lr={lr}, warmup_steps={warmup_steps}")
        overrides = {
            k: v
            for k, v in (
                ("score_thresh", score_thresh),
                ("nms_thresh", nms_thresh),
                ("detections_per_img", detections_per_img),
            )
            if v is not None
        }
        self.model = build_ssd(arch, num_classes, image_size, width_mult, weights_backbone, bn_momentum, **overrides)
        self.map = nn.ModuleDict(
            {
                stage: VOCMeanAveragePrecision(compare_torchmetrics=compare_torchmetrics, eleven_point=eleven_point)
                for stage in ("val", "test")
            }
        )
        self.parent_init = ParentInit(  # loaded at the start of a fresh run, never on resume
            self, init_from, partial(init_weights_from, key_map={"model.": "model."})
        )
        trunk = trunk_modules(self.model)
        self._frozen: list[nn.Module] = []
        if freeze_backbone:
            for module in trunk:
                module.requires_grad_(False)
            self._frozen += trunk
        elif freeze_batchnorm:
            self._frozen += [
                m for part in trunk for m in part.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            ]
        for module in self._frozen:
            module.eval()

    def configure_callbacks(self) -> list:
        return [self.parent_init]

    @property
    def class_names(self) -> list[str] | None:
        """Names by label (background first): the argument, else the DataModule's."""
        if self.hparams.class_names is not None:
            return list(self.hparams.class_names)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return getattr(datamodule, "class_names", None)

    def train(self, mode: bool = True) -> Detector:
        """Like ``nn.Module.train``, but frozen parts (and frozen BatchNorms) stay in ``eval()``."""
        super().train(mode)
        for module in getattr(self, "_frozen", ()):
            module.eval()
        return self

    def forward(self, images: Tensor | Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """Detections of images in [0, 1] (eval mode): one ``{"boxes", "scores", "labels"}`` per image."""
        return self.model(images)

    # ------------------------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return detection_training_step(self, self.model, batch, self.hparams.skip_difficult)

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return detection_eval_step(self.model, batch, self.map["val"])

    def on_validation_epoch_end(self) -> None:
        log_detection_metrics(self, self.map["val"], "val", self.class_names)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        detection_eval_step(self.model, batch, self.map["test"])

    def on_test_epoch_end(self) -> None:
        log_detection_metrics(self, self.map["test"], "test", self.class_names, per_class=True)

    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, Tensor]]:
        """Per image ``{"boxes" (N, 4) xyxy pixels of the input, "scores" (N,), "labels" (N,)}`` on the CPU."""
        images, _ = split_detection_batch(batch)
        return [{k: v.detach().cpu() for k, v in pred.items()} for pred in self.model(images)]

    # -------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> dict:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_schedule == "cosine":  # warm-up from lr / 1000
            total = int(self.trainer.estimated_stepping_batches)
            scheduler = warmup_cosine(optimizer, total, hp.warmup_steps, start_factor=1e-3)
        else:
            scheduler = warmup_multistep(optimizer, hp.lr_milestones or [], hp.lr_gamma, hp.warmup_steps, 1e-3)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
