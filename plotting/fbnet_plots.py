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


def probability_deviation(probs: np.ndarray) -> tuple[np.ndarray, float]:
    """``probs − 1/C`` (deviation from the uniform distribution over the C candidates) and the half-width
    of a colour scale symmetric around 0 that spans it (never below 1e-4, so a fully uniform map is
    still drawn)."""
    probs = np.asarray(probs, dtype=float)
    deviation = probs - 1.0 / probs.shape[-1]
    return deviation, max(float(np.abs(deviation).max()), 1e-4)


def plot_probabilities(probs: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Heat map of ``probs`` (L, 9): one row per searchable layer, one column per candidate.

    The colour is the deviation from uniform, ``p − 1/9``, on a diverging scale symmetric around 0 and
    sized to the largest deviation (labelled with its range), so the near-uniform probabilities of an
    early search are visible; on a 0–1 scale they would all look the same. Each cell also prints
    its probability."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    probs = np.asarray(probs, dtype=float)
    deviation, half = probability_deviation(probs)
    fig, ax = plt.subplots(figsize=(6.4, 0.28 * probs.shape[0] + 1.6))
    image = ax.imshow(deviation, vmin=-half, vmax=half, cmap="RdBu_r", aspect="auto")
    ax.set_xticks(range(len(CANDIDATE_NAMES)), CANDIDATE_NAMES, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(probs.shape[0]), [str(i) for i in range(probs.shape[0])], fontsize=7)
    ax.set_ylabel("layer")
    for (i, j), p in np.ndenumerate(probs):
        ax.text(j, i, f"{p:.3f}" if p >= 0.001 else f"{p:.0e}", ha="center", va="center", fontsize=5,
                color="white" if abs(deviation[i, j]) > 0.6 * half else "black")  # fmt: skip
    fig.colorbar(image, ax=ax, label=f"probability − 1/{probs.shape[-1]}\n(scale ±{half:.2g}; cells: probability)")
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
