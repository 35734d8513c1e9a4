"""Milliseconds per image: batch 1, after warm-up, median over repeats, under ``torch.inference_mode``.

One implementation, used by ``CodeRecognition``'s ``test/ms_per_image`` and by
``benchmarks/code_recognition_table.py``. The model runs on whatever device its parameters (and the
example) are on; on CUDA the clock is read after ``torch.cuda.synchronize``.

:func:`measure_side_by_side` interleaves the models (one call of each per round, in turn), so that a
load change on a shared machine hits every model alike and their *ratios* stay meaningful.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(model: nn.Module, example: Tensor) -> float:
    _sync(example.device)
    start = time.perf_counter()
    model(example)
    _sync(example.device)
    return (time.perf_counter() - start) * 1e3


def measure_side_by_side(
    models: Mapping[str, nn.Module],
    example: Tensor,
    warmup: int = 5,
    repeats: int = 30,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Per-call times in ms of each model on ``example`` (batch 1), interleaved round by round.

    Args:
        models: name → model; each is put in ``eval()`` for the measurement and restored afterwards.
        example: the input, e.g. ``torch.rand(1, 3, 224, 224)`` on the models' device.
        warmup: untimed rounds first.
        repeats: timed rounds.
        on_round: called with the round index after each timed round (progress bars).

    Returns:
        name → the ``repeats`` times in ms (take the median).
    """
    if example.shape[0] != 1:
        raise ValueError(f"latency is measured at batch size 1, got an example of shape {tuple(example.shape)}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    was_training = {name: m.training for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    try:
        for m in models.values():
            m.eval()
        with torch.inference_mode():
            for _ in range(warmup):
                for m in models.values():
                    m(example)
            for r in range(repeats):
                for name, m in models.items():
                    times[name].append(_time_once(m, example))
                if on_round is not None:
                    on_round(r)
    finally:
        for name, m in models.items():
            m.train(was_training[name])
    return times


def measure_ms_per_image(model: nn.Module, example: Tensor, warmup: int = 5, repeats: int = 30) -> float:
    """Median ms per call of ``model`` on the batch-1 ``example`` (see :func:`measure_side_by_side`)."""
    return statistics.median(measure_side_by_side({"model": model}, example, warmup, repeats)["model"])
