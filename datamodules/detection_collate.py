"""Batching for detection: images stacked, targets kept as a list (each image has its own box count)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def detection_collate(
    batch: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[torch.Tensor | list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """``[(image, target), ...]`` → ``(images, targets)``.

    Images of one size are stacked into ``(B, 3, H, W)`` (the usual case after the resize); images of
    different sizes stay a list, as torchvision's detection models accept. ``targets`` is the list of
    per-image dicts, unchanged.
    """
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    if images and all(image.shape == images[0].shape for image in images):
        return torch.stack(images), targets
    return images, targets
