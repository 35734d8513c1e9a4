"""Whole-network timing of a B-DCNN: the float network against the decomposed one run bit-serially.

:func:`bitserial_network` copies a network converted by :func:`models.bdcnn.convert_to_bdcnn` (bits set by
:func:`models.bdcnn.set_bits`) and replaces every :class:`~models.bdcnn.BinaryDecomposedConv2d` and
:class:`~models.bdcnn.BinaryDecomposedLinear` by a module that runs it through
:class:`models.bitserial.BitSerialLayer` (quantise, pack, AND + popcount, combine); everything else
(ReLU, pooling, normalisation, float layers left undecomposed) runs as before. Its output equals the float
simulation ``decomposed_model(x)`` to float rounding (the integers are exact).

:func:`network_ms_per_image` times the float network and that bit-serial copy on one example (batch 1),
on ``threads`` CPU threads (torch and the kernel alike), the two runs interleaved repetition by
repetition so that a load change on a shared machine hits both alike; it reports medians and minima in
milliseconds per image, and the ratio of the same repetition's times (never the ratio of two columns'
separate minima). This is the speed axis of the bit-search report (Figure 3 of the bit-search paper).
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time

import torch
from torch import Tensor, nn

from models.bdcnn import BinaryDecomposedConv2d, BinaryDecomposedLayer, decomposed_layers


class BitSerialModule(nn.Module):
    """``BitSerialLayer(layer)`` as a module, standing in for ``layer`` in a network (inference only)."""

    def __init__(self, layer: BinaryDecomposedLayer, backend: str | None = None) -> None:
        super().__init__()
        from models.bitserial import BitSerialLayer  # the compiled kernel is loaded only when used

        self.kernel = BitSerialLayer(layer, backend=backend)
        self.name = type(layer).__name__

    def forward(self, x: Tensor) -> Tensor:
        return self.kernel(x)

    def extra_repr(self) -> str:
        return f"{self.name}, bits={self.kernel.bits}, backend={self.kernel.backend}"


def bitserial_network(decomposed_model: nn.Module, backend: str | None = None) -> nn.Module:
    """A copy of ``decomposed_model`` (in eval mode) with every decomposed layer run bit-serially.

    Raises ``ValueError`` before any work when the network has no decomposed layer, when a layer has no
    bits (quantisation off) or is a grouped convolution (the kernel runs ``groups=1`` only), naming them.
    """
    layers = decomposed_layers(decomposed_model)
    if not layers:
        raise ValueError("the network has no binary-decomposed layer (convert it with models.bdcnn.convert_to_bdcnn)")
    no_bits = [name for name, layer in layers.items() if layer.bits is None]
    grouped = [n for n, m in layers.items() if isinstance(m, BinaryDecomposedConv2d) and m.groups != 1]
    if no_bits:
        raise ValueError(f"decomposed layers without bits (set them with models.bdcnn.set_bits): {no_bits}")
    if grouped:
        raise ValueError(f"the bit-serial kernel runs groups=1 convolutions only; grouped layers: {grouped}")
    network = copy.deepcopy(decomposed_model).cpu().eval()
    for name in layers:
        parent_name, _, child = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, child, BitSerialModule(getattr(parent, child), backend))
    return network


@contextlib.contextmanager
def cpu_threads(threads: int, backend: str | None = None):
    """Run torch (and the bit-serial ``backend``, when it is threaded) with ``threads`` CPU threads, restored
    after."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        from models import bitserial

        with bitserial.kernel_threads(threads, backend):
            yield
    finally:
        torch.set_num_threads(saved)


def serial_net_backend(network: nn.Module) -> str | None:
    """The backend of the first bit-serial layer of ``network`` (all share one)."""
    return next((m.kernel.backend for m in network.modules() if isinstance(m, BitSerialModule)), None)


def _ms(fn, x: Tensor) -> tuple[float, float]:
    """Wall-clock and calling-thread CPU milliseconds of ``fn(x)``."""
    start, cpu = time.perf_counter(), time.thread_time()
    fn(x)
    return (time.perf_counter() - start) * 1e3, (time.thread_time() - cpu) * 1e3


def network_ms_per_image(
    float_model: nn.Module,
    decomposed_model: nn.Module,
    example: Tensor,
    *,
    repeats: int = 5,
    threads: int = 1,
    warmup: int = 1,
    backend: str | None = None,
) -> dict:
    """Milliseconds per image of ``float_model`` and of ``decomposed_model`` run bit-serially.

    Args:
        float_model: the float network (not modified; timed on the CPU in eval mode).
        decomposed_model: ``convert_to_bdcnn(float_model, ...)`` with its bits set (``set_bits``).
        example: one input (a batch of 1, or a single image without the batch dimension).
        repeats: timed repetitions; float and bit-serial alternate within each one.
        threads: CPU threads for torch and the kernel alike.
        warmup: untimed repetitions first (compilation, caches).
        backend: the bit-serial backend (:data:`models.bitserial.Backend`; default: the fastest available).

    Returns:
        ``float_ms``, ``bitserial_ms`` (medians), ``float_min_ms``, ``bitserial_min_ms`` (minima),
        ``speedup`` (median over repetitions of float/bit-serial of the same repetition),
        ``speedup_min`` (that ratio at the repetition with the lowest bit-serial time), at ``threads=1``
        also ``float_cpu_ms``, ``bitserial_cpu_ms`` and ``speedup_cpu`` (medians of the calling thread's CPU
        time: on a loaded machine, wall-clock time also counts the waits for a core), ``repeats``,
        ``threads``, ``backend``, ``layers`` (how many layers run bit-serially) and the per-repetition
        ``float_times_ms`` / ``bitserial_times_ms``.
    """
    if repeats < 1 or threads < 1 or warmup < 0:
        raise ValueError(f"repeats and threads must be >= 1 and warmup >= 0, got {repeats}, {threads}, {warmup}")
    if example.dim() in (1, 3):
        example = example.unsqueeze(0)
    if example.shape[0] != 1:
        raise ValueError(f"time one image at a time (batch 1); got a batch of {example.shape[0]}")
    float_net = copy.deepcopy(float_model).cpu().eval()
    serial_net = bitserial_network(decomposed_model, backend)
    example = example.detach().cpu()
    float_times, serial_times, float_cpu, serial_cpu = [], [], [], []
    with torch.no_grad(), cpu_threads(threads, serial_net_backend(serial_net)):
        for r in range(warmup + repeats):
            (t_float, c_float), (t_serial, c_serial) = _ms(float_net, example), _ms(serial_net, example)
            if r >= warmup:
                float_times.append(t_float)
                serial_times.append(t_serial)
                float_cpu.append(c_float)
                serial_cpu.append(c_serial)
    ratios = [f / s for f, s in zip(float_times, serial_times, strict=True)]
    best = min(range(repeats), key=serial_times.__getitem__)
    kernels = [m.kernel for m in serial_net.modules() if isinstance(m, BitSerialModule)]
    return {
        "float_ms": statistics.median(float_times),
        "bitserial_ms": statistics.median(serial_times),
        "float_min_ms": min(float_times),
        "bitserial_min_ms": min(serial_times),
        "speedup": statistics.median(ratios),
        "speedup_min": ratios[best],
        # CPU time of the calling thread: the work itself, whatever the load (all of it at threads = 1)
        "float_cpu_ms": statistics.median(float_cpu) if threads == 1 else None,
        "bitserial_cpu_ms": statistics.median(serial_cpu) if threads == 1 else None,
        "speedup_cpu": statistics.median(f / s for f, s in zip(float_cpu, serial_cpu, strict=True))
        if threads == 1
        else None,
        "repeats": repeats,
        "threads": threads,
        "backend": kernels[0].backend,
        "layers": len(kernels),
        "float_times_ms": float_times,
        "bitserial_times_ms": serial_times,
    }
