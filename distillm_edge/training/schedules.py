"""Schedules: distillation temperature per step, and learning-rate multipliers for ``LambdaLR``.

Temperature (``temperature_at``):

- ``exponential`` (progressive, the default): tau(t) = max(floor, tau0 * exp(-gamma * t)), from
  tau0 (default 8) down to the floor (default 1). If ``gamma`` is not given it is derived so the
  floor is reached exactly at ``decay_steps``: gamma = ln(tau0 / floor) / decay_steps.
- ``linear``: tau0 -> floor linearly over ``decay_steps``, then the floor.
- ``constant``: tau0 at every step.

Learning rate (``lr_multiplier``, ``lr_lambda``): linear warmup over ``warmup_steps`` (multiplier
(step + 1) / warmup_steps, so the first step does not run at lr 0), then ``cosine``, ``linear`` or
``constant`` decay to ``min_ratio`` at ``total_steps``. Use as
``LambdaLR(optimizer, lr_lambda(warmup_steps=..., total_steps=..., decay="cosine"))``.

Test: ``pytest tests/training/test_schedules.py``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from distillm_edge.errors import UserError

TEMPERATURE_SCHEDULES = ("exponential", "linear", "constant")
LR_DECAYS = ("cosine", "linear", "constant")


def temperature_at(
    step: int,
    *,
    schedule: str = "exponential",
    start: float = 8.0,
    floor: float = 1.0,
    decay_steps: int | None = None,
    gamma: float | None = None,
) -> float:
    """The distillation temperature at optimizer step ``step`` (0-based)."""
    if schedule not in TEMPERATURE_SCHEDULES:
        raise UserError(f"unknown temperature schedule '{schedule}'; choose one of {', '.join(TEMPERATURE_SCHEDULES)}")
    if start <= 0:
        raise UserError(f"temperature start must be > 0, got {start}")
    if schedule == "constant":
        return float(start)
    if not 0 < floor <= start:
        raise UserError(f"temperature floor must be in (0, start={start}], got {floor}")
    step = max(0, step)
    if schedule == "exponential" and gamma is not None:
        if gamma < 0:
            raise UserError(f"temperature decay gamma must be >= 0, got {gamma}")
        return max(float(floor), start * math.exp(-gamma * step))
    if decay_steps is None or decay_steps <= 0:
        raise UserError(f"the {schedule} temperature schedule needs decay_steps > 0 (or gamma), got {decay_steps}")
    if step >= decay_steps:
        return float(floor)
    if schedule == "linear":
        return start + (floor - start) * step / decay_steps
    gamma = math.log(start / floor) / decay_steps
    return max(float(floor), start * math.exp(-gamma * step))


def lr_multiplier(
    step: int,
    *,
    warmup_steps: int,
    total_steps: int,
    decay: str = "cosine",
    min_ratio: float = 0.0,
) -> float:
    """LR multiplier at step ``step``: linear warmup, then ``decay`` to ``min_ratio`` at ``total_steps``."""
    if decay not in LR_DECAYS:
        raise UserError(f"unknown learning-rate decay '{decay}'; choose one of {', '.join(LR_DECAYS)}")
    if warmup_steps < 0 or total_steps <= 0:
        raise UserError(f"need warmup_steps >= 0 and total_steps > 0, got {warmup_steps} and {total_steps}")
    if not 0.0 <= min_ratio <= 1.0:
        raise UserError(f"min_ratio must be in [0, 1], got {min_ratio}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant" or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    if decay == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_lambda(*, warmup_steps: int, total_steps: int, decay: str = "cosine", min_ratio: float = 0.0) -> Callable[[int], float]:
    """``lr_multiplier`` with its options bound, for ``torch.optim.lr_scheduler.LambdaLR`` (validated now)."""
    lr_multiplier(0, warmup_steps=warmup_steps, total_steps=total_steps, decay=decay, min_ratio=min_ratio)
    return functools.partial(lr_multiplier, warmup_steps=warmup_steps, total_steps=total_steps, decay=decay,
                             min_ratio=min_ratio)
