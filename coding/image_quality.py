"""Per-image distortion measures (PSNR, MS-SSIM) on images in [0, 1].

MS-SSIM with its five default scales needs sides above ``(11 - 1) · 2⁴ = 160`` pixels; smaller images
use as many of the leading scales as fit (the weights renormalised), so small crops still get a
number — always the same number of scales for the same image size.
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    peak_signal_noise_ratio,
)

MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_KERNEL = 11


def ms_ssim_betas(height: int, width: int, kernel_size: int = MS_SSIM_KERNEL) -> tuple[float, ...]:
    """The leading MS-SSIM scale weights that an image of this size supports (renormalised to sum 1)."""
    side = min(height, width)
    scales = len(MS_SSIM_BETAS)
    while scales > 1 and side <= (kernel_size - 1) * 2 ** (scales - 1):
        scales -= 1
    betas = MS_SSIM_BETAS[:scales]
    return tuple(b / sum(betas) for b in betas)


def psnr(x_hat: Tensor, x: Tensor) -> Tensor:
    """PSNR in dB of each image of a batch (B,), on [0, 1] images (``x_hat`` is clamped)."""
    return peak_signal_noise_ratio(
        x_hat.clamp(0, 1), x, data_range=1.0, reduction="none", dim=(1, 2, 3)
    )


def ms_ssim(x_hat: Tensor, x: Tensor) -> Tensor:
    """MS-SSIM of each image of a batch (B,), on [0, 1] images (``x_hat`` is clamped)."""
    h, w = x.shape[-2:]
    kernel = min(MS_SSIM_KERNEL, (min(h, w) // 2) * 2 - 1)
    return multiscale_structural_similarity_index_measure(
        x_hat.clamp(0, 1),
        x,
        data_range=1.0,
        kernel_size=kernel,
        betas=ms_ssim_betas(h, w, kernel),
        reduction="none",
    )
