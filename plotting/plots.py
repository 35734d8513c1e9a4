"""Matplotlib figures shared by the callbacks and the benchmarks (headless: Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
