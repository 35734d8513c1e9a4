"""Multiply–accumulates of one forward pass, per submodule, counted by ``torch.utils.flop_counter``.

PyTorch's counter counts the matrix products and convolutions (2 FLOPs per MAC); element-wise work
(activations, LSTM gate arithmetic, additions) is not counted, as is usual for MAC tables.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def macs_by_module(model: nn.Module, run: Callable[[], object]) -> dict[str, int]:
    """MACs of ``run()`` (a call of ``model``), keyed by submodule name relative to ``model``
    (``""`` for the whole call, ``"codec.encoder"`` …); a module called several times (a recurrent
    cell over k iterations) sums over its calls."""
    root = type(model).__name__
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        run()
    out: dict[str, int] = {}
    for name, by_op in counter.get_flop_counts().items():
        if name == "Global":
            continue
        relative = "" if name == root else name.removeprefix(root + ".")
        out[relative] = sum(by_op.values()) // 2
    out.setdefault("", counter.get_total_flops() // 2)
    return out
