"""Figures of the FBNet search: per-layer candidate probabilities, and the blocks chosen by several
architectures side by side (Ozawa et al., Figures 6–7)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from models.fbnet_blocks import CANDIDATE_NAMES  # noqa: E402


def plot_probabilities(probs: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Heat map of ``probs`` (L, 9): one row per searchable layer, one column per candidate."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    probs = np.asarray(probs, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 0.28 * probs.shape[0] + 1.4))
    image = ax.imshow(probs, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(CANDIDATE_NAMES)), CANDIDATE_NAMES, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(probs.shape[0]), [str(i) for i in range(probs.shape[0])], fontsize=7)
    ax.set_ylabel("layer")
    for (i, j), p in np.ndenumerate(probs):
        if p >= 0.3:
            ax.text(j, i, f"{p:.2f}", ha="center", va="center", fontsize=6, color="black" if p > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="probability")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_chosen_blocks(architectures: Mapping[str, Sequence[str]], path: str | Path, title: str = "") -> Path:
    """One row per model, one cell per layer coloured by its block; skips left white (Figures 6–7)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(architectures)
    layers = max(len(a) for a in architectures.values())
    colours = plt.get_cmap("tab10")
    grid = np.ones((len(names), layers, 3))
    for r, name in enumerate(names):
        for c, block in enumerate(architectures[name]):
            if block != "skip":
                grid[r, c] = colours(CANDIDATE_NAMES.index(block))[:3]
    fig, ax = plt.subplots(figsize=(0.42 * layers + 2.5, 0.45 * len(names) + 1.6))
    ax.imshow(grid, aspect="auto")
    for r, name in enumerate(names):
        for c, block in enumerate(architectures[name]):
            if block != "skip":
                ax.text(c, r, block.replace("_", "\n"), ha="center", va="center", fontsize=5)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xticks(range(layers), [str(i) for i in range(layers)], fontsize=7)
    ax.set_xlabel("searchable layer (white: skip)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
