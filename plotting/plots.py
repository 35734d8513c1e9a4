"""Matplotlib figures shared by the callbacks and the benchmarks (headless: Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402


def plot_rate_distortion(rows: Sequence[dict], path: str | Path, title: str = "rate–distortion") -> Path:
    """Two panels, PSNR and MS-SSIM against bpp, one line per ``row["codec"]``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    codecs = list(dict.fromkeys(r["codec"] for r in rows))
    for codec in codecs:
        points = sorted((r for r in rows if r["codec"] == codec), key=lambda r: r["bpp"])
        for ax, key in zip(axes, ("psnr", "ms_ssim"), strict=True):
            ax.plot([r["bpp"] for r in points], [r[key] for r in points], marker="o", label=codec)
    axes[0].set_ylabel("PSNR [dB]")
    axes[1].set_ylabel("MS-SSIM")
    for ax in axes:
        ax.set_xlabel("bits per pixel")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def reconstruction_grid(original: Tensor, x_hats: Tensor, iterations: Sequence[int]) -> Tensor:
    """One row: the original, then the reconstruction after each listed iteration (1-based)."""
    images = [original, *(x_hats[k - 1] for k in iterations)]
    return make_grid(torch.stack(images).clamp(0, 1), nrow=len(images), padding=2, pad_value=1.0)


def save_image_grid(grid: Tensor, path: str | Path, labels: Sequence[str] = ()) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = grid.shape[-2:]
    fig = plt.figure(figsize=(w / 100, h / 100 + (0.3 if labels else 0)), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grid.permute(1, 2, 0).cpu().numpy())
    ax.axis("off")
    if labels:
        ax.set_title("   |   ".join(labels), fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
