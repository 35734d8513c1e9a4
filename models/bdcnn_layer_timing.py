"""Per-layer CPU timing of a B-DCNN: each decomposed layer's bit-serial kernel against its float layer.

The bit search's table reports, for every layer of a configuration, the median time of its bit-serial
kernel (:class:`models.bitserial.BitSerialLayer`, batch 1) at the chosen Q, and the float layer's on the
same input. The whole network's time per image (Figure 3's speed axis) is measured by
:func:`models.bdcnn_timing.network_ms_per_image`, not by summing these.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from models.bdcnn import BinaryDecomposedConv2d, decomposed_layers, layer_inputs, set_bits
from models.bdcnn_timing import cpu_threads  # numba's pool is started only when numba runs


def cpu_copy(module: nn.Module) -> nn.Module:
    """A deep copy on the CPU in eval mode (the original, possibly on a GPU, is left alone)."""
    return copy.deepcopy(module).cpu().eval()


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` runs (no gradient)."""
    times = []
    with torch.no_grad():
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def layer_ms(
    float_model: nn.Module,
    model: nn.Module,
    names: Sequence[str],
    bits_needed: Mapping[str, set[int]],
    image_size: int,
    repeats: int = 3,
    threads: int = 1,
) -> dict[str, dict[int, float]]:
    """Median ms of each layer's bit-serial kernel (CPU, batch 1) at the Q values asked for, and of the float
    layer (key 0) on the same input; depthwise/grouped layers are skipped (no kernel).

    Args:
        float_model: the network before decomposition (same module names as ``model``).
        model: the decomposed network (copied to the CPU; not modified).
        names: the decomposed layers to time.
        bits_needed: per layer, the Q values to time.
        image_size: side of the random example image.
        repeats: timed runs per measurement (median).
        threads: CPU threads of numba and torch while timing.
    """
    from models.bitserial import BitSerialLayer  # numba is imported only when timing

    model = cpu_copy(model)
    set_bits(model, None)
    captured = layer_inputs(model, torch.rand(1, 3, image_size, image_size), names)
    layers = decomposed_layers(model)
    float_layers = dict(float_model.named_modules())
    out: dict[str, dict[int, float]] = {}
    with cpu_threads(threads):
        for name in names:
            layer, x = layers[name], captured[name]
            if isinstance(layer, BinaryDecomposedConv2d) and layer.groups != 1:
                continue
            source = cpu_copy(float_layers[name])
            with torch.no_grad():
                source(x)  # warm up
            times = {0: median_ms(lambda s=source, x=x: s(x), repeats)}
            for q in sorted(bits_needed.get(name, ())):
                layer.bits = q
                kernel = BitSerialLayer(layer)
                kernel(x)  # compile / warm up
                times[q] = median_ms(lambda k=kernel, x=x: k(x), repeats)
            out[name] = times
    return out
