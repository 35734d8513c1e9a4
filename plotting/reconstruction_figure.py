"""Figure 3 of Takase et al. (各繰り返し回数の復元画像とデータサイズ): reconstructions after each iteration, each
titled with its own real stream's bytes and bits per pixel. Drawn by ``callbacks.reconstruction_grid`` during
training and by ``benchmarks/reconstruction_figure.py`` for a checkpoint and any images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor

from plotting.plots import plt


def save_reconstruction_figure(
    originals: Sequence[Tensor],
    reconstructions: Mapping[int, Sequence[Tensor]],
    stream_bytes: Mapping[int, Sequence[int]] | None,
    path: str | Path,
    source_bytes: Sequence[int] | None = None,
    title: str = "",
) -> Path:
    """Rows of (original, reconstruction at each k), each titled with its stream bytes and bpp.

    Args:
        originals: N images (3, H, W) in [0, 1] (a (N, 3, H, W) tensor, or images of different sizes).
        reconstructions: k → the N decoded images after k iterations, each the size of its original.
        stream_bytes: k → the N images' stream sizes in bytes at k (``None``: unknown, not shown).
        path: PNG to write (folders created).
        source_bytes: the N source files' sizes (shown over the originals), if known.
        title: figure title.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ks = sorted(reconstructions)
    n = len(originals)
    h, w = max(x.shape[-2] for x in originals), max(x.shape[-1] for x in originals)
    scale = 2.2 / max(h, w)
    figure, axes = plt.subplots(n, 1 + len(ks), figsize=((1 + len(ks)) * w * scale + 0.2, n * (h * scale + 0.6)),
                                squeeze=False)  # fmt: skip
    for i in range(n):
        panels = [("original" + (f"\n{source_bytes[i]:,} B" if source_bytes is not None else ""), originals[i])]
        for k in ks:
            size = stream_bytes[k][i] if stream_bytes is not None else None
            pixels = originals[i].shape[-2] * originals[i].shape[-1]
            label = f"k = {k}" + (f"\n{size:,} B ({8 * size / pixels:.3f} bpp)" if size is not None else "")
            panels.append((label, reconstructions[k][i]))
        for axis, (label, image) in zip(axes[i], panels, strict=True):
            axis.imshow(image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            axis.set_title(label, fontsize=7)
            axis.axis("off")
    if title:
        figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
    return path
