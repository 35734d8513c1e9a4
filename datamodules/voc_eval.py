"""PASCAL VOC detection evaluation: AP at IoU 0.5, VOC07 11-point and area (all-point) definitions.

The algorithm is the VOC devkit's (``VOCevaldet.m``), per class:

1. all detections of the class, over all images, sorted by descending score; ties by image key, then
   input order (as a stable sort of detections listed image by image; the keys DDP processes give
   make the gathered order that of one process, so ties rank alike under DDP);
2. each detection is matched to the ground-truth box of its image with the highest IoU; if that IoU
   is ≥ 0.5: a *difficult* box makes the detection ignored (neither true nor false positive), a box
   not yet matched makes it a true positive (and the box matched), an already matched box makes it a
   false positive (duplicate); below 0.5 it is a false positive;
3. recall = TP / (number of non-difficult boxes), precision = TP / (TP + FP), cumulated;
4. AP: **VOC07 11-point**: mean over t ∈ {0, 0.1, …, 1} of the highest precision at recall ≥ t;
   **area** (VOC2010+): the area under the precision envelope (precision made monotone from the right),
   summed where recall changes.

mAP is the mean over classes with at least one non-difficult box. The papers' tables (SSD, the
shared-CNN and compressed-recognition papers) report VOC2007 test mAP with the **VOC07 11-point**
definition, so ``map50`` is that number; ``map50_area`` is the VOC2010+ definition.

**The 11 recall thresholds** are, by default, ``np.arange(0, 1.1, 0.1)`` as in py-faster-rcnn's
``voc_eval.py`` — the implementation behind the published VOC07 tables the papers compare with (reused
by the SSD code bases and mmdetection). Its 0.3, 0.6 and 0.7 are a hair above the tenths
(0.30000000000000004, 0.6000000000000001, 0.7000000000000001), so a class whose recall reaches
exactly 3/10, 6/10 or 7/10 loses that point: on the same detections the two conventions differ in the
last digits. ``eleven_point="exact"`` selects exact k/10 thresholds (the devkit's ``0:0.1:1`` in
MATLAB is exact only by luck of rounding, so neither is "the" devkit; we follow the published numbers).

One deviation from the devkit: boxes are continuous coordinates (no "+1 pixel" in widths and areas,
since boxes live in resized-image coordinates).

``VOCMeanAveragePrecision`` is a torchmetrics ``Metric`` (states concatenated across DDP processes)
that can also report torchmetrics' ``MeanAveragePrecision(iou_thresholds=[0.5])`` beside it: COCO's
101-point interpolation, with difficult boxes passed as ``iscrowd`` (ignored regions), which needs
``pycocotools`` (or ``faster-coco-eval``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

ElevenPoint = Literal["voc_eval", "exact"]

ELEVEN_POINTS: dict[str, np.ndarray] = {
    "voc_eval": np.arange(0.0, 1.1, 0.1),  # py-faster-rcnn's voc_eval: the published VOC07 numbers
    "exact": np.arange(11) / 10.0,  # k/10 exactly
}


def voc_ap(
    recall: np.ndarray, precision: np.ndarray, use_07_metric: bool, eleven_point: ElevenPoint = "voc_eval"
) -> float:
    """AP from cumulative recall/precision arrays (in detection order), 11-point or area definition.

    ``eleven_point`` picks the 11-point thresholds: ``"voc_eval"`` (default, ``np.arange(0, 1.1, 0.1)``
    as py-faster-rcnn) or ``"exact"`` (k/10); see the module docstring.
    """
    if eleven_point not in ELEVEN_POINTS:
        raise ValueError(f"eleven_point must be one of {sorted(ELEVEN_POINTS)}, got {eleven_point!r}")
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        total = 0.0
        for threshold in ELEVEN_POINTS[eleven_point]:
            above = recall >= threshold
            total += float(precision[above].max()) if above.any() else 0.0
        return total / 11.0
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of each row of ``boxes`` (N, 4) with ``box`` (4,), xyxy continuous coordinates."""
    x0 = np.maximum(boxes[:, 0], box[0])
    y0 = np.maximum(boxes[:, 1], box[1])
    x1 = np.minimum(boxes[:, 2], box[2])
    y1 = np.minimum(boxes[:, 3], box[3])
    inter = np.clip(x1 - x0, 0.0, None) * np.clip(y1 - y0, 0.0, None)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = areas + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class ClassResult:
    """Per-class outcome: AP in both definitions, the matching flags and the positive count."""

    ap_voc07: float
    ap_area: float
    tp: np.ndarray
    fp: np.ndarray
    num_positives: int


def class_average_precision(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_images: np.ndarray,
    gt_boxes: np.ndarray,
    gt_difficult: np.ndarray,
    gt_images: np.ndarray,
    iou_threshold: float = 0.5,
    eleven_point: ElevenPoint = "voc_eval",
) -> ClassResult:
    """AP of one class (see the module docstring); NaN APs when it has no non-difficult box.

    ``det_images`` / ``gt_images`` say which image each row belongs to (any hashable ids).
    ``tp``/``fp`` are in descending-score order (an ignored detection has both 0).
    """
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_difficult = np.asarray(gt_difficult, dtype=bool).reshape(-1)
    gt_images = np.asarray(gt_images).reshape(-1)
    num_positives = int((~gt_difficult).sum())
    by_image: dict = {}
    for index, image in enumerate(gt_images.tolist()):
        by_image.setdefault(image, []).append(index)
    matched = np.zeros(len(gt_boxes), dtype=bool)
    det_images = np.asarray(det_images).reshape(-1)
    order = np.lexsort((det_images, -np.asarray(det_scores, dtype=np.float64).reshape(-1)))  # stable
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for rank, d in enumerate(order):
        candidates = by_image.get(det_images[d].item(), [])
        if not candidates:
            fp[rank] = 1
            continue
        overlaps = box_iou(gt_boxes[candidates], det_boxes[d])
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold:
            g = candidates[best]
            if gt_difficult[g]:
                continue
            if not matched[g]:
                tp[rank] = 1
                matched[g] = True
            else:
                fp[rank] = 1
        else:
            fp[rank] = 1
    if num_positives == 0:
        return ClassResult(math.nan, math.nan, tp, fp, 0)
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    recall = ctp / num_positives
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return ClassResult(
        voc_ap(recall, precision, use_07_metric=True, eleven_point=eleven_point),
        voc_ap(recall, precision, use_07_metric=False),
        tp,
        fp,
        num_positives,
    )


def evaluate_detections(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_labels: np.ndarray,
    det_images: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    gt_difficult: np.ndarray,
    gt_images: np.ndarray,
    iou_threshold: float = 0.5,
    eleven_point: ElevenPoint = "voc_eval",
) -> dict[str, float | dict[int, float]]:
    """mAP over classes with a non-difficult box, both definitions, from flat arrays.

    Returns ``{"map50": VOC07 11-point mAP, "map50_area": area mAP, "ap50_voc07": {label: AP},
    "ap50_area": {label: AP}}``; the mAPs are NaN when no class has a non-difficult box.
    """
    det_labels = np.asarray(det_labels).reshape(-1)
    gt_labels = np.asarray(gt_labels).reshape(-1)
    det_boxes = np.asarray(det_boxes).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
    det_scores, det_images = np.asarray(det_scores).reshape(-1), np.asarray(det_images).reshape(-1)
    gt_difficult, gt_images = np.asarray(gt_difficult).reshape(-1), np.asarray(gt_images).reshape(-1)
    ap07: dict[int, float] = {}
    ap_area: dict[int, float] = {}
    for label in sorted(set(gt_labels.tolist())):
        d, g = det_labels == label, gt_labels == label
        result = class_average_precision(
            det_boxes[d],
            det_scores[d],
            det_images[d],
            gt_boxes[g],
            gt_difficult[g],
            gt_images[g],
            iou_threshold,
            eleven_point,
        )
        if result.num_positives:
            ap07[label], ap_area[label] = result.ap_voc07, result.ap_area
    return {
        "map50": float(np.mean(list(ap07.values()))) if ap07 else math.nan,
        "map50_area": float(np.mean(list(ap_area.values()))) if ap_area else math.nan,
        "ap50_voc07": ap07,
        "ap50_area": ap_area,
    }


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class VOCMeanAveragePrecision(Metric):
    """VOC mAP@0.5 (``map50``: VOC07 11-point, the papers' number; ``map50_area``: VOC2010+ area).

    ``update(preds, targets)`` takes torchvision's detection format: ``preds`` a list of
    ``{"boxes" (N, 4) xyxy, "scores" (N,), "labels" (N,)}``, ``targets`` a list of ``{"boxes", "labels",
    "difficult" (optional, bool)}``, one dict per image, in the same coordinates. States are flat
    tensors tagged with an image key unique across DDP processes (``local index × world size + rank``),
    concatenated on sync.

    ``compute()`` returns ``{"map50", "map50_area", "classes" (K,) labels with a non-difficult box,
    "ap50_per_class" (K,) their VOC07 11-point AP, "ap50_area_per_class" (K,)}`` and, when asked,
    ``"map50_torchmetrics"``. Log the scalars; the per-class tensors are for tables.

    Args:
        iou_threshold: IoU for a match (0.5 for VOC).
        eleven_point: 11-point recall thresholds, ``"voc_eval"`` (py-faster-rcnn's, the published
            convention; default) or ``"exact"`` (k/10); see the module docstring.
        compare_torchmetrics: Also compute torchmetrics' ``MeanAveragePrecision(iou_thresholds=[0.5])``
            (COCO-style 101-point AP, difficult boxes as ``iscrowd``) and report it as
            ``map50_torchmetrics``. Needs ``pycocotools`` or ``faster-coco-eval``.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self,
        iou_threshold: float = 0.5,
        compare_torchmetrics: bool = False,
        eleven_point: ElevenPoint = "voc_eval",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if eleven_point not in ELEVEN_POINTS:
            raise ValueError(f"eleven_point must be one of {sorted(ELEVEN_POINTS)}, got {eleven_point!r}")
        self.iou_threshold = iou_threshold
        self.eleven_point = eleven_point
        for name in ("det_boxes", "det_scores", "det_labels", "det_images"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        for name in ("gt_boxes", "gt_labels", "gt_difficult", "gt_images"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._images_seen = 0
        self.reference = None
        if compare_torchmetrics:
            from torchmetrics.detection import MeanAveragePrecision

            self.reference = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=[0.5])

    def update(self, preds: Sequence[dict[str, torch.Tensor]], targets: Sequence[dict[str, torch.Tensor]]) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"got {len(preds)} predictions for {len(targets)} targets (one dict per image each)")
        rank, world = _rank_and_world()
        for pred, target in zip(preds, targets, strict=True):
            key = self._images_seen * world + rank
            self._images_seen += 1
            boxes = pred["boxes"].detach().reshape(-1, 4).float()
            self.det_boxes.append(boxes)
            self.det_scores.append(pred["scores"].detach().reshape(-1).float())
            self.det_labels.append(pred["labels"].detach().reshape(-1).long())
            self.det_images.append(torch.full((len(boxes),), key, dtype=torch.long, device=boxes.device))
            gt = target["boxes"].detach().reshape(-1, 4).float()
            difficult = target.get("difficult")
            if difficult is None:
                difficult = torch.zeros(len(gt), dtype=torch.bool, device=gt.device)
            self.gt_boxes.append(gt)
            self.gt_labels.append(target["labels"].detach().reshape(-1).long())
            self.gt_difficult.append(difficult.detach().reshape(-1).bool())
            self.gt_images.append(torch.full((len(gt),), key, dtype=torch.long, device=gt.device))
        if self.reference is not None:
            self.reference.update(
                [{k: pred[k].detach() for k in ("boxes", "scores", "labels")} for pred in preds],
                [
                    {
                        "boxes": t["boxes"].detach(),
                        "labels": t["labels"].detach(),
                        "iscrowd": t.get("difficult", torch.zeros(len(t["labels"]), dtype=torch.bool)).long(),
                    }
                    for t in targets
                ],
            )

    def compute(self) -> dict[str, torch.Tensor]:
        def flat(state: list | torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> np.ndarray:
            if isinstance(state, list) and not state:
                return np.zeros(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype)
            return dim_zero_cat(state).cpu().numpy()

        result = evaluate_detections(
            flat(self.det_boxes, (0, 4), torch.float32),
            flat(self.det_scores, (0,), torch.float32),
            flat(self.det_labels, (0,), torch.long),
            flat(self.det_images, (0,), torch.long),
            flat(self.gt_boxes, (0, 4), torch.float32),
            flat(self.gt_labels, (0,), torch.long),
            flat(self.gt_difficult, (0,), torch.bool),
            flat(self.gt_images, (0,), torch.long),
            self.iou_threshold,
            self.eleven_point,
        )
        classes = sorted(result["ap50_voc07"])
        out = {
            "map50": torch.tensor(result["map50"], dtype=torch.float32),
            "map50_area": torch.tensor(result["map50_area"], dtype=torch.float32),
            "classes": torch.tensor(classes, dtype=torch.long),
            "ap50_per_class": torch.tensor([result["ap50_voc07"][c] for c in classes], dtype=torch.float32),
            "ap50_area_per_class": torch.tensor([result["ap50_area"][c] for c in classes], dtype=torch.float32),
        }
        if self.reference is not None:
            out["map50_torchmetrics"] = self.reference.compute()["map"].float().cpu()
        return out

    def reset(self) -> None:
        super().reset()
        self._images_seen = 0
        if self.reference is not None:
            self.reference.reset()


def class_name(label: int, class_names: Sequence[str] | None) -> str:
    """``class_names[label]`` (index 0 = background) or ``class{label}``."""
    return class_names[label] if class_names is not None and 0 <= label < len(class_names) else f"class{label}"
