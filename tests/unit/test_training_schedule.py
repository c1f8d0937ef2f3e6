import math

import pytest
import torch

from pneumo.training.schedule import build_scheduler, warmup_cosine_factor


def _lrs(steps_per_epoch=10, epochs=5, warmup_epochs=1.0, lr=1e-3, min_lr=1e-5):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=lr)
    scheduler = build_scheduler(
        optimizer, steps_per_epoch=steps_per_epoch, epochs=epochs, warmup_epochs=warmup_epochs, base_lr=lr, min_lr=min_lr
    )
    lrs = []
    for _ in range(steps_per_epoch * epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_linear_warmup_then_cosine_to_min_lr():
    lrs = _lrs()
    warm, decay = lrs[:10], lrs[10:]
    # warm-up: strictly increasing, linear (constant increments), starting well below the base rate
    steps = [b - a for a, b in zip(warm, warm[1:])]
    assert all(s > 0 for s in steps) and max(steps) - min(steps) < 1e-12
    assert warm[0] == pytest.approx(1e-3 / 11)
    # the peak is the base rate right after warm-up, then a monotone cosine decay towards min_lr
    assert decay[0] == pytest.approx(1e-3)
    assert all(b <= a for a, b in zip(decay, decay[1:]))
    midpoint = decay[len(decay) // 2]
    assert midpoint == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5)), rel=1e-6)
    assert decay[-1] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 39 / 40)), rel=1e-6)
    assert min(lrs) >= 1e-5


def test_factor_edges():
    assert warmup_cosine_factor(0, 0, 100, 0.0) == pytest.approx(1.0)  # no warm-up: start at the peak
    assert warmup_cosine_factor(100, 0, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine_factor(10_000, 5, 100, 0.1) == pytest.approx(0.1)  # beyond the end: stays at min
    assert warmup_cosine_factor(3, 0, 0, 0.1) == 1.0  # degenerate schedule: constant


def test_fractional_warmup_epochs():
    lrs = _lrs(steps_per_epoch=4, epochs=2, warmup_epochs=0.5)
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1e-3)
