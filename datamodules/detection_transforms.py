"""SSD training augmentation and the evaluation resize, as bbox-aware albumentations pipelines.

The SSD recipe (Liu et al. 2016, and the ssd.pytorch / torchvision SSD references), in order:

1. photometric distortion: brightness ±32/255, contrast ×[0.5, 1.5], saturation ×[0.5, 1.5], hue ±18°;
2. zoom out (``SSDZoomOut``, p=0.5): the image placed at a random position of a canvas up to 4× its
   sides, filled with the RGB mean;
3. IoU crop (``SSDIoUCrop``): a patch of 0.3–1× each side (aspect 0.5–2) whose IoU with some object
   is at least one of {0.1, 0.3, 0.5, 0.7, 0.9}, or the whole image, or any patch; objects whose
   centre falls outside the patch are dropped, the others clipped;
4. horizontal flip (p=0.5);
5. resize to ``image_size``² (aspect not kept, as SSD does).

Pipelines take ``image`` (RGB ``uint8`` HWC), ``bboxes`` (``pascal_voc`` format: x_min, y_min, x_max,
y_max in pixels), ``labels`` and ``difficult``; they return a float32 CHW tensor in [0, 1] and the
boxes in pixels of the resized image.
"""

from __future__ import annotations

import math
from typing import Any

import albumentations as A
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.pytorch import ToTensorV2

RGB_MEAN = (124, 116, 104)  # ImageNet mean × 255: SSD's fill for the zoom-out canvas
IOU_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


class SSDZoomOut(A.CropAndPad):
    """SSD's "expand": a canvas of ``r``× the image sides (``r`` ~ U(1, max_ratio)), image at a random spot.

    Built on ``A.CropAndPad`` (so boxes follow); only the pad amounts are drawn differently: one ratio
    for both sides and a uniform offset, as in SSD.

    Args:
        max_ratio: Largest canvas side relative to the image side (4 in SSD).
        fill: Canvas colour (RGB).
        p: Probability of zooming out.
    """

    def __init__(self, max_ratio: float = 4.0, fill: tuple[int, int, int] = RGB_MEAN, p: float = 0.5) -> None:
        super().__init__(percent=(0.0, max_ratio - 1.0), keep_size=False, fill=0, p=p)
        self.max_ratio = max_ratio
        self.canvas_fill = tuple(fill)

    def _get_percent_params(self) -> list[float]:
        ratio = self.py_random.uniform(1.0, self.max_ratio)
        left = self.py_random.uniform(0.0, ratio - 1.0)
        top = self.py_random.uniform(0.0, ratio - 1.0)
        return [top, ratio - 1.0 - left, ratio - 1.0 - top, left]  # top, right, bottom, left

    def _get_pad_value(self, fill: Any) -> Any:
        return self.canvas_fill

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_ratio", "canvas_fill")


def _iou(boxes: np.ndarray, rect: np.ndarray) -> np.ndarray:
    x0 = np.maximum(boxes[:, 0], rect[0])
    y0 = np.maximum(boxes[:, 1], rect[1])
    x1 = np.minimum(boxes[:, 2], rect[2])
    y1 = np.minimum(boxes[:, 3], rect[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + (rect[2] - rect[0]) * (rect[3] - rect[1]) - inter
    return inter / np.maximum(union, 1e-12)


class SSDIoUCrop(BaseCrop):
    """SSD's random patch sampling, as an albumentations crop (boxes follow through ``BaseCrop``).

    Each call draws a mode: keep the whole image, a patch with IoU ≥ t (t ∈ ``min_ious``) with at least
    one object, or an unconstrained patch; up to ``trials`` patches of 0.3–1× each side with aspect
    ratio in [0.5, 2] are tried, and a patch must contain some object's centre. Objects whose centres
    lie outside the chosen patch are removed (SSD's rule); the rest are clipped to the patch.

    Args:
        min_ious: IoU thresholds of the constrained modes.
        min_scale: Smallest patch side relative to the image side.
        trials: Patches tried per mode before falling back to the whole image.
        p: Probability of applying the transform.
    """

    def __init__(
        self,
        min_ious: tuple[float, ...] = IOU_THRESHOLDS,
        min_scale: float = 0.3,
        trials: int = 50,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.min_ious = tuple(min_ious)
        self.min_scale = min_scale
        self.trials = trials

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        whole = (0, 0, width, height)
        bboxes = data.get("bboxes")
        if bboxes is None or len(bboxes) == 0:
            return {"crop_coords": whole}
        boxes = np.asarray(bboxes)[:, :4] * np.array([width, height, width, height])
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        modes: list[float | None] = [None, *self.min_ious, -math.inf]  # None: whole image
        mode = modes[self.py_random.randrange(len(modes))]
        if mode is None:
            return {"crop_coords": whole}
        for _ in range(self.trials):
            w = self.py_random.uniform(self.min_scale * width, width)
            h = self.py_random.uniform(self.min_scale * height, height)
            if not 0.5 <= h / w <= 2.0:
                continue
            left = self.py_random.uniform(0, width - w)
            top = self.py_random.uniform(0, height - h)
            rect = np.array([int(left), int(top), int(left + w), int(top + h)])
            if rect[2] - rect[0] < 1 or rect[3] - rect[1] < 1:
                continue
            if _iou(boxes, rect).max() < mode:
                continue
            inside = (
                (centres[:, 0] > rect[0])
                & (centres[:, 0] < rect[2])
                & (centres[:, 1] > rect[1])
                & (centres[:, 1] < rect[3])
            )
            if inside.any():
                return {"crop_coords": tuple(int(v) for v in rect)}
        return {"crop_coords": whole}

    def apply_to_bboxes(self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        height, width = params["shape"][:2]
        if len(bboxes):
            cx = (bboxes[:, 0] + bboxes[:, 2]) / 2 * width
            cy = (bboxes[:, 1] + bboxes[:, 3]) / 2 * height
            x0, y0, x1, y1 = crop_coords
            bboxes = bboxes[(cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)]
        return super().apply_to_bboxes(bboxes, crop_coords, **params)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_ious", "min_scale", "trials")


def _bbox_params() -> A.BboxParams:
    # clip: boxes stay inside the image after each step; min_area/min_visibility drop boxes that a crop
    # reduced to (almost) nothing.
    return A.BboxParams(
        format="pascal_voc", label_fields=["labels", "difficult"], clip=True, min_area=1.0, min_visibility=0.0
    )


def ssd_train_transform(image_size: int = 300) -> A.Compose:
    """The SSD augmentation above, ending at ``image_size``², float32 CHW in [0, 1]."""
    return A.Compose(
        [
            A.RandomBrightnessContrast(brightness_limit=32 / 255, contrast_limit=0.5, p=0.5),
            A.ColorJitter(brightness=0.0, contrast=0.0, saturation=(0.5, 1.5), hue=18 / 360, p=0.5),
            SSDZoomOut(max_ratio=4.0, p=0.5),
            SSDIoUCrop(),
            A.HorizontalFlip(p=0.5),
            A.Resize(image_size, image_size),
            A.ToFloat(max_value=255.0),
            ToTensorV2(),
        ],
        bbox_params=_bbox_params(),
    )


def detection_eval_transform(image_size: int = 300) -> A.Compose:
    """Resize to ``image_size``² (aspect not kept, as SSD does), float32 CHW in [0, 1]."""
    return A.Compose(
        [A.Resize(image_size, image_size), A.ToFloat(max_value=255.0), ToTensorV2()],
        bbox_params=_bbox_params(),
    )
