"""Numeric precision of a training run: which mixed precision Accelerate uses.

``precision: auto`` is bf16 autocast on a GPU that supports it and fp32 elsewhere (a CPU);
``fp32`` is plain fp32; ``bf16`` is bf16 autocast over the student's weights.

Test: ``pytest tests/training/test_precision.py``.
"""

from __future__ import annotations

import torch

from distillm_edge.training.config import TrainConfig


def mixed_precision(cfg: TrainConfig) -> str:
    """Accelerate's ``mixed_precision`` for ``cfg.precision``: "no", "bf16" or "fp16"."""
    cuda = torch.cuda.is_available()
    if cfg.precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    return {"fp32": "no"}.get(cfg.precision, cfg.precision)
