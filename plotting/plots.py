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
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Lay out, write at 120 dpi, close; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_training_curves(
    curves: dict[str, Sequence[float]],
    path: str | Path,
    ylabel: str = "training loss",
    title: str = "",
    smooth: int = 1,
) -> Path:
    """One line per ``curves`` entry against the step (a running mean over ``smooth`` steps); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in curves.items():
        values = list(values)
        window = max(1, min(smooth, len(values)))
        means = [sum(values[i + 1 - window : i + 1]) / window for i in range(window - 1, len(values))]
        ax.plot(range(window, len(values) + 1), means, label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel + (f" (running mean of {smooth})" if smooth > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    return _save(fig, path)
