"""Tests of the temperature and learning-rate schedules against their closed forms.

Run: ``pytest tests/training/test_schedules.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from distillm_edge.errors import UserError
from distillm_edge.training.schedules import lr_lambda, lr_multiplier, temperature_at


def test_exponential_temperature_reaches_the_floor_at_decay_steps():
    assert temperature_at(0, decay_steps=100) == 8.0
    gamma = math.log(8.0) / 100
    assert temperature_at(37, decay_steps=100) == pytest.approx(8.0 * math.exp(-gamma * 37))
    assert temperature_at(100, decay_steps=100) == 1.0
    assert temperature_at(99, decay_steps=100) == pytest.approx(8.0 * math.exp(-gamma * 99))
    assert temperature_at(99, decay_steps=100) > 1.0
    assert temperature_at(10_000, decay_steps=100) == 1.0


def test_exponential_temperature_with_explicit_gamma_is_floored():
    assert temperature_at(10, gamma=0.01, start=4.0, floor=2.0) == pytest.approx(4.0 * math.exp(-0.1))
    assert temperature_at(1000, gamma=0.01, start=4.0, floor=2.0) == 2.0


def test_linear_and_constant_temperature():
    assert temperature_at(50, schedule="linear", start=8.0, floor=2.0, decay_steps=100) == pytest.approx(5.0)
    assert temperature_at(150, schedule="linear", start=8.0, floor=2.0, decay_steps=100) == 2.0
    assert temperature_at(12345, schedule="constant", start=3.0) == 3.0


@given(st.integers(0, 5000), st.integers(1, 1000), st.sampled_from(["exponential", "linear"]))
def test_temperature_is_monotone_and_bounded(step, decay_steps, schedule):
    now = temperature_at(step, schedule=schedule, decay_steps=decay_steps)
    later = temperature_at(step + 1, schedule=schedule, decay_steps=decay_steps)
    assert 1.0 <= later <= now <= 8.0


def test_temperature_errors_name_the_option():
    with pytest.raises(UserError, match="decay_steps"):
        temperature_at(3)
    with pytest.raises(UserError, match="floor"):
        temperature_at(3, floor=10.0, decay_steps=5)
    with pytest.raises(UserError, match="unknown temperature schedule"):
        temperature_at(3, schedule="cyclic", decay_steps=5)


def test_lr_warmup_then_cosine_to_min_ratio():
    kw = dict(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert lr_multiplier(0, **kw) == pytest.approx(0.1)
    assert lr_multiplier(9, **kw) == pytest.approx(1.0)
    assert lr_multiplier(10, **kw) == pytest.approx(1.0)
    assert lr_multiplier(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(110, **kw) == pytest.approx(0.1)
    assert lr_multiplier(500, **kw) == pytest.approx(0.1)


def test_lr_linear_and_constant_decay():
    assert lr_multiplier(60, warmup_steps=10, total_steps=110, decay="linear") == pytest.approx(0.5)
    assert lr_multiplier(60, warmup_steps=10, total_steps=110, decay="constant") == 1.0
    assert lr_multiplier(0, warmup_steps=0, total_steps=10) == 1.0
    with pytest.raises(UserError, match="learning-rate decay"):
        lr_multiplier(0, warmup_steps=0, total_steps=10, decay="step")


def test_lr_lambda_drives_lambdalr():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup_steps=2, total_steps=4, decay="linear"))
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.25, 0.5, 0.5, 0.25, 0.0])
    with pytest.raises(UserError):
        lr_lambda(warmup_steps=-1, total_steps=4)
