"""Numeric precision and optimizer memory of a training run.

- Mixed precision: ``precision: bf16`` runs the forward/backward under bf16 autocast while the
  trainable weights, their gradients and AdamW's states stay fp32 ("master weights"). Training
  bf16 weights directly does not work at the research's learning rates: near a weight of 0.01
  bf16 values are ~6e-5 apart, so an update of 1e-6 (lr 1e-6, or warmup's first steps near
  1e-9) rounds back to the same weight and nothing moves. ``TrainConfig`` therefore refuses
  ``student.dtype`` bfloat16/float16 for full fine-tuning (LoRA's frozen base may be bf16: peft
  keeps the adapters fp32). ``auto`` is bf16 autocast on a GPU that supports it, and on a CPU with
  native bf16 matmuls (AVX512-BF16 or AMX: ~2-4x the fp32 matmul rate through oneDNN); fp32 on
  any other CPU, where oneDNN would emulate bf16 more slowly than fp32 (:func:`cpu_has_native_bf16`).
  fp16 is refused (it needs loss scaling, and every GPU of the research setup has bf16).
- The losses themselves always compute in fp32 (``losses.py`` upcasts each chunk and turns
  autocast off inside), so bf16 autocast changes only the matmuls.
- Casts paid once, not per forward: autocast re-casts every fp32 weight a matmul touches on every
  call. For the student's trainable weights its cast cache already helps within one autocast
  region, so :func:`step.accumulate` runs all micro-batches of an optimizer step in one region
  (the weights cannot change inside a step: one cast per step instead of one per micro-batch).
  Frozen teachers are not cached by autocast (it caches only leaf tensors that require grad);
  :class:`AutocastWeights` keeps a bf16 copy of each teacher's ``nn.Linear`` weights, made once,
  and swaps it in for the teachers' training forwards under autocast; the student's frozen Linear
  weights (a frozen tied LM head, LoRA's fp32 base) get the same (``frozen_only``). The values are identical
  (autocast would round the same fp32 weight to the same bf16 value); evaluation outside
  autocast keeps the fp32 weights. Measured by ``benchmarks/train_step.py`` (``precision``).
- Optimizer: ``optimizer: adamw`` (torch) or ``adamw_8bit`` (bitsandbytes' 8-bit AdamW: the two
  moment states in 8 bits, ~75% less optimizer memory; needs bitsandbytes, and a GPU in practice).
- ``gradient_checkpointing: true`` recomputes each block's activations in backward (less memory,
  ~30% more compute); the trainer switches it on with transformers' non-reentrant checkpointing.

Test: ``pytest tests/training/test_train_precision.py``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from distillm_edge.errors import UserError
from distillm_edge.training.config import TrainConfig


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16) and oneDNN can use it.

    ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is also true on plain AVX512 CPUs, where bf16 is
    emulated (slower than fp32), so the CPU flags decide; without /proc/cpuinfo (not Linux) the answer
    is False and ``auto`` stays fp32.
    """
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except (OSError, RuntimeError, AttributeError):
        return False
    return False


def mixed_precision(cfg: TrainConfig) -> str:
    """Accelerate's ``mixed_precision`` for ``cfg.precision``: "no" or "bf16"."""
    cuda = torch.cuda.is_available()
    if cfg.precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "no"
        return "bf16" if cpu_has_native_bf16() else "no"
    return {"fp32": "no"}.get(cfg.precision, cfg.precision)


def make_optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """AdamW over ``groups`` (torch's, or bitsandbytes' 8-bit one with ``optimizer: adamw_8bit``)."""
    if cfg.optimizer == "adamw_8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise UserError("optimizer: adamw_8bit needs bitsandbytes: pip install bitsandbytes "
                            "(or set optimizer: adamw).") from None
        return bnb.optim.AdamW8bit(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


class AutocastWeights:
    """bf16 (or ``dtype``) copies of a frozen model's fp32 ``nn.Linear`` weights, made once.

    :meth:`active` swaps them in for a forward under autocast and restores the fp32 weights after,
    so a forward outside autocast (evaluation) still runs in fp32. Quantized linears (bitsandbytes,
    which subclass ``nn.Linear``) and non-fp32 weights are left alone. A weight tied to the input
    embedding (a tied LM head) is swapped only on the Linear: the embedding keeps its fp32 table.
    """

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16, *, frozen_only: bool = False):
        self.dtype = dtype
        self._lock, self._depth = threading.Lock(), 0  # nested or concurrent users (micro-batch threads): swap once
        self.pairs = [(m, m.weight, torch.nn.Parameter(m.weight.detach().to(dtype), requires_grad=False))
                      for m in model.modules() if type(m) is torch.nn.Linear and m.weight.dtype == torch.float32
                      and not (frozen_only and m.weight.requires_grad)]

    @property
    def nbytes(self) -> int:
        return sum(low.numel() * low.element_size() for _, _, low in self.pairs)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """The low-precision copies in place while any thread is inside (the first one in swaps, the last one out
        restores: ``step.accumulate`` may run micro-batches in threads at once)."""
        with self._lock:
            if self._depth == 0:
                for m, _, low in self.pairs:
                    m.weight = low
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    for m, full, _ in self.pairs:
                        m.weight = full


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The dtype autocast casts to on ``device`` right now, or None when autocast is off there."""
    kind = torch.device(device).type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
