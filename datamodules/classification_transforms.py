"""Albumentations pipelines for classification and for the compressor's training patches.

Every pipeline takes an RGB ``uint8`` array (H, W, 3) and returns a ``float32`` tensor (3, H, W) in
[0, 1]. There is no mean/std normalisation here: compressors take [0, 1] images, and each recognition
model normalises its own input.

Choices (the papers are silent; these are the field's defaults):
- training: ``RandomResizedCrop(scale=(0.08, 1))`` + horizontal flip, as in torchvision's ImageNet recipe;
- evaluation: resize the shorter side to ``image_size / 0.875`` (256 for 224) then centre crop; or a
  plain resize to ``image_size`` squared (``plain_resize_transform``: the shared-trunk paper's eq. 5–6);
- patches (recurrent compressor, Toderici et al. 2017): random ``patch_size`` crops (32×32) of the
  unresized image, reflect-padded when the image is smaller — the one patch pipeline, used by the
  compressor DataModules and by ImageNet's ``mode="patches"``.

The pipelines draw from their own random state; the DataModules' loaders seed it for every sample from
(seed, epoch, index) (``datamodules.seeding``), in the main process as in any worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # albumentations (with cv2, scipy) costs seconds of start-up: imported where used
    import albumentations as A

EVAL_CROP_FRACTION = 0.875


def _to_unit_tensor() -> list[A.BasicTransform]:
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    return [A.ToFloat(max_value=255.0), ToTensorV2()]


def train_transform(image_size: int = 224) -> A.Compose:
    """Random-resized crop to ``image_size`` and horizontal flip; float32 CHW in [0, 1]."""
    import albumentations as A

    return A.Compose(
        [
            A.RandomResizedCrop(size=(image_size, image_size), scale=(0.08, 1.0)),
            A.HorizontalFlip(p=0.5),
            *_to_unit_tensor(),
        ]
    )


def eval_transform(image_size: int = 224) -> A.Compose:
    """Shorter side to ``round(image_size / 0.875)``, centre crop ``image_size``; float32 CHW in [0, 1]."""
    import albumentations as A

    return A.Compose(
        [
            A.SmallestMaxSize(max_size=round(image_size / EVAL_CROP_FRACTION)),
            A.CenterCrop(height=image_size, width=image_size),
            *_to_unit_tensor(),
        ]
    )


def plain_resize_transform(image_size: int = 224) -> A.Compose:
    """Resize to ``image_size`` × ``image_size``, aspect ratio not kept (Hiraga et al., eq. 5–6); float32 CHW in [0, 1]."""
    import albumentations as A

    return A.Compose([A.Resize(height=image_size, width=image_size), *_to_unit_tensor()])


def patch_transform(patch_size: int = 32) -> A.Compose:
    """A random ``patch_size`` square crop (reflect-padded if needed) with a horizontal flip."""
    import albumentations as A
    import cv2

    return A.Compose(
        [
            A.PadIfNeeded(min_height=patch_size, min_width=patch_size, border_mode=cv2.BORDER_REFLECT_101),
            A.RandomCrop(height=patch_size, width=patch_size),
            A.HorizontalFlip(p=0.5),
            *_to_unit_tensor(),
        ]
    )


def cifar_train_transform(image_size: int = 32) -> A.Compose:
    """CIFAR-10 training augmentation: 4-pixel zero pad, random 32×32 crop, flip (DARTS/FBNet recipe).

    ``image_size`` other than 32 resizes after the crop (for models that expect larger inputs).
    """
    import albumentations as A
    import cv2

    ops: list[A.BasicTransform] = [
        A.PadIfNeeded(min_height=40, min_width=40, border_mode=cv2.BORDER_CONSTANT, fill=0),
        A.RandomCrop(height=32, width=32),
        A.HorizontalFlip(p=0.5),
    ]
    if image_size != 32:
        ops.append(A.Resize(image_size, image_size))
    return A.Compose([*ops, *_to_unit_tensor()])


def cifar_eval_transform(image_size: int = 32) -> A.Compose:
    """CIFAR-10 evaluation: the image as it is (resized only when ``image_size`` is not 32)."""
    import albumentations as A

    ops: list[A.BasicTransform] = [] if image_size == 32 else [A.Resize(image_size, image_size)]
    return A.Compose([*ops, *_to_unit_tensor()])
