"""Distortion measures on images in [0, 1]: PSNR and MS-SSIM, per image of a batch.

MS-SSIM's five standard scales need more than ``(11 − 1)·2⁴ = 160`` pixels per side; smaller images
use the leading scales that fit (see :func:`ms_ssim_scales`), the weights renormalised to sum to 1.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    peak_signal_noise_ratio,
)

MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_KERNEL = 11


def ms_ssim_scales(height: int, width: int, kernel_size: int = MS_SSIM_KERNEL) -> int:
    """Most scales (≤ 5) MS-SSIM can use on an image of this size; 0 if even one is impossible.

    The standard five scales need more than ``(kernel_size − 1)·2⁴`` = 160 pixels per side (torchmetrics
    asks for 176 ≥ its own bound). For smaller images fewer scales are used: the largest ``n`` with
    ``side // 2^(n−1) > kernel_size − 1`` that torchmetrics also accepts (side ≥ 2^n and
    ``side // max(1, n − 1)² > kernel_size − 1``).
    """
    side = min(height, width)
    for n in range(len(MS_SSIM_BETAS), 0, -1):
        if side >= 2**n and side // 2 ** (n - 1) > kernel_size - 1 and side // max(1, n - 1) ** 2 > kernel_size - 1:
            return n
    return 0


def psnr(x_hat: Tensor, x: Tensor) -> Tensor:
    """PSNR in dB of each image of a batch (B,) (``inf`` where equal); ``x_hat`` is clamped to [0, 1]."""
    return peak_signal_noise_ratio(
        x_hat.detach().float().clamp(0, 1), x.detach().float(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )


def ms_ssim(x_hat: Tensor, x: Tensor) -> Tensor:
    """MS-SSIM of each image of a batch (B,) with :func:`ms_ssim_scales` scales (NaN for sides ≤ 10)."""
    n = ms_ssim_scales(*x.shape[-2:])
    if n == 0:
        return torch.full((x.shape[0],), float("nan"))
    betas = MS_SSIM_BETAS[:n]
    betas = tuple(b / sum(betas) for b in betas) if n < len(MS_SSIM_BETAS) else betas
    return multiscale_structural_similarity_index_measure(
        x_hat.detach().float().clamp(0, 1),
        x.detach().float(),
        data_range=1.0,
        betas=betas,
        kernel_size=MS_SSIM_KERNEL,
        reduction="none",
    )
