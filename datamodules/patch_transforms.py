"""Images as the codec's tensors: uint8 (H, W, 3) → float32 (3, H, W) in [0, 1].

(The training patches' augmentation is ``datamodules.classification_transforms.patch_transform``, seeded
per sample by ``datamodules.seeding``.)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_unit_tensor(image: np.ndarray) -> Tensor:
    """uint8 (H, W, 3) → float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)
