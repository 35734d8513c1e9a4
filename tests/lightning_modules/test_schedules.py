"""The warm-up schedules against PyTorch's own schedulers chained step by step (an independent implementation)."""

from __future__ import annotations

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, MultiStepLR, SequentialLR

from lightning_modules.schedules import warmup_cosine, warmup_multistep


def lrs(make, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make(optimizer)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize(("total", "warmup", "start"), [(20, 5, None), (20, 0, None), (30, 4, 1e-3), (6, 9, None)])
def test_warmup_cosine_matches_linear_then_cosine_annealing(total, warmup, start):
    w = min(warmup, total - 1)

    def reference(optimizer):
        cosine = CosineAnnealingLR(optimizer, T_max=max(1, total - w))
        if w == 0:
            return cosine
        ramp = LinearLR(optimizer, start_factor=start or 1 / (w + 1), total_iters=w)
        return SequentialLR(optimizer, [ramp, cosine], milestones=[w])

    ours = lrs(lambda o: warmup_cosine(o, total, warmup, start), total)
    assert ours == pytest.approx(lrs(reference, total), abs=1e-9)
    assert ours[0] == pytest.approx(0.1 * (start or 1 / (w + 1))) and ours[w] == pytest.approx(0.1)


def test_warmup_multistep_matches_linear_then_multistep():
    def reference(optimizer):
        ramp = LinearLR(optimizer, start_factor=1e-3, total_iters=3)
        steps = MultiStepLR(optimizer, milestones=[10 - 3, 15 - 3], gamma=0.1)  # counted after the warm-up
        return SequentialLR(optimizer, [ramp, steps], milestones=[3])

    ours = lrs(lambda o: warmup_multistep(o, [2, 10, 15], 0.1, 3, 1e-3), 20)  # 2: inside the warm-up, ignored
    assert ours == pytest.approx(lrs(reference, 20), abs=1e-12)
    assert ours[-1] == pytest.approx(0.1 * 0.01)


def test_cosine_stays_at_zero_after_the_end():
    ours = lrs(lambda o: warmup_cosine(o, 10, 2), 14)
    assert ours[10:] == [0.0] * 4


def test_bad_settings():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(optimizer, 10, -1)
    with pytest.raises(ValueError, match="start_factor"):
        warmup_multistep(optimizer, [5], 0.1, 2, 0.0)
