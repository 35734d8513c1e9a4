"""Learning-rate schedules in optimizer steps: a linear warm-up, then cosine decay to 0 or multistep decay.

One implementation for the modules that warm up (closed forms in one ``LambdaLR``, so a checkpoint holds
one scheduler state, and the factor of any step is known without replaying the steps):

- warm-up over ``warmup_steps``: the factor rises linearly from ``start_factor`` to 1; ``start_factor=None``
  starts at ``1 / (warmup_steps + 1)``, so the first step already moves and step ``warmup_steps`` reaches 1
  (torchvision's recipes; ``LinearLR(start_factor=1/(w+1))``);
- then ``cosine``: ``0.5 · (1 + cos(π · (step − w) / (total − w)))``, 0 from ``total_steps`` on (PyTorch's
  ``CosineAnnealingLR`` rises again after ``T_max``; here it stays at 0);
- or ``multistep``: × ``gamma`` at every milestone (absolute optimizer steps) after the warm-up; milestones
  inside the warm-up are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _check(warmup_steps: int, start_factor: float | None) -> None:
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if start_factor is not None and not 0 < start_factor <= 1:
        raise ValueError(f"start_factor must be in (0, 1], got {start_factor}")


def _with_warmup(
    warmup_steps: int, start_factor: float | None, after: Callable[[int], float]
) -> Callable[[int], float]:
    start = 1.0 / (warmup_steps + 1) if start_factor is None else start_factor

    def factor(step: int) -> float:
        if step < warmup_steps:
            return start + (1.0 - start) * step / warmup_steps
        return after(step)

    return factor


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, start_factor: float | None = None
) -> LambdaLR:
    """Linear warm-up for ``warmup_steps`` (at most ``total_steps − 1``), then cosine to 0 at ``total_steps``."""
    _check(warmup_steps, start_factor)
    total = max(1, int(total_steps))
    warmup = min(warmup_steps, total - 1)

    def cosine(step: int) -> float:
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, _with_warmup(warmup, start_factor, cosine))


def warmup_multistep(
    optimizer: Optimizer,
    milestones: Sequence[int],
    gamma: float,
    warmup_steps: int = 0,
    start_factor: float | None = None,
) -> LambdaLR:
    """Linear warm-up for ``warmup_steps``, then × ``gamma`` at each of ``milestones`` after it."""
    _check(warmup_steps, start_factor)
    after = sorted(m for m in milestones if m > warmup_steps)
    return LambdaLR(optimizer, _with_warmup(warmup_steps, start_factor, lambda s: gamma ** sum(m <= s for m in after)))
