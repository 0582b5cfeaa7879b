"""Model FLOPs utilization: FLOPs per token of a Llama-style model, and the matmul peak measured at start-up.

FLOPs (PaLM, Chowdhery et al. 2022, appendix B; nanochat's ``estimate_flops``): a token costs
``2 N`` FLOPs forward and ``4 N`` backward through the ``N`` weights it is multiplied by, plus
attention's two T×T products, ``4 · L · H · Q · T`` forward for context length T (H query heads
of width Q, L layers; no causal discount, as flash/sdpa kernels and the counters compute the
full square), ×3 with backward:

    train:   6 · (N_blocks + head_rows · V · D) + 12 · L · H · Q · T
    forward: 2 · (N_blocks + head_rows · V · D) +  4 · L · H · Q · T

``N_blocks`` = the decoder blocks' projection weights (q, k, v, o, gate, up, down); embeddings
are a lookup (no FLOPs); the LM head (V × D) runs on ``head_rows`` of the positions (1.0 for all;
the trainer computes logits only at counted positions, ``logits_to_keep``, e.g. ~0.5 with
prompt masking). These are *model* FLOPs: frozen weights (embeddings, LoRA bases) still count
their 6·N, as MFU is defined against the model, not against the work a trick avoids. Checked
against ``torch.utils.flop_counter.FlopCounterMode`` on a tiny Llama (``tests/training/test_mfu.py``).

Peak: :func:`measure_peak` times ``torch.mm`` of two n×n matrices in a dtype (bf16: the CPU's
AVX512-BF16/AMX path through oneDNN; fp32) with the threads training will use, median of
repeats, in FLOP/s. MFU = achieved model FLOP/s ÷ that peak — against the *bf16* peak when the
step runs under bf16 autocast (the issue's target: ≥ 30 %).

Integration (the trainer, once issue 9's refactor lands):

- setup: ``peak = measure_peak(torch.bfloat16 if autocast_bf16 else torch.float32)`` (≈ 1-2 s),
  logged once (``peak GFLOP/s``); ``shape = ModelShape.from_config(student.config)`` and one per
  teacher. On a shared CPU the start-up peak drifts with the neighbours' load (measured here:
  15-57 GFLOP/s fp32 within an hour, against ~220 idle), so MFU is only meaningful on an idle
  machine or against a peak re-timed alongside the steps (``benchmarks/train_step.py`` does the
  latter); say which in the log;
- per step: ``flops = sum(train_flops_per_token(shape, T, head_rows=N/T) * T for each sequence) +
  teacher forward_flops_per_token(...)`` (or ``step_flops`` below), ``mfu = flops / dt / peak``;
  log ``mfu`` next to ``tokens_per_s``.

Test: ``pytest tests/training/test_mfu.py``; used by ``benchmarks/train_step.py``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a Llama-style decoder that FLOPs depend on."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def from_config(cls, config) -> ModelShape:
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(int(config.num_hidden_layers), int(config.hidden_size), heads,
                   int(getattr(config, "num_key_value_heads", None) or heads), int(head_dim),
                   int(config.intermediate_size), int(config.vocab_size))

    @property
    def block_params(self) -> int:
        """Projection weights of all decoder blocks (q, k, v, o, gate, up, down)."""
        d, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = d * q + 2 * d * kv + q * d + 3 * d * self.intermediate
        return self.layers * per_layer

    @property
    def head_params(self) -> int:
        return self.vocab * self.hidden


def forward_flops_per_token(shape: ModelShape, context: float, *, head_rows: float = 1.0) -> float:
    """Forward FLOPs per token at context length ``context`` (the sequence length attended over)."""
    return 2.0 * (shape.block_params + head_rows * shape.head_params) + 4.0 * shape.layers * shape.heads * shape.head_dim * context


def train_flops_per_token(shape: ModelShape, context: float, *, head_rows: float = 1.0) -> float:
    """Forward + backward FLOPs per token (3x the forward)."""
    return 3.0 * forward_flops_per_token(shape, context, head_rows=head_rows)


def sequence_flops(shape: ModelShape, length: int, *, head_rows: int | None = None, train: bool = True) -> float:
    """FLOPs of one sequence of ``length`` tokens (``head_rows`` positions projected to the vocabulary; all if None)."""
    rows = length if head_rows is None else head_rows
    per = train_flops_per_token if train else forward_flops_per_token
    return per(shape, length, head_rows=rows / max(1, length)) * length


def peak_size(device: str | torch.device) -> int:
    """The matrix side :func:`measure_peak` times by default: 1024 on the CPU, 8192 on a GPU (where a
    1024³ product is too short to fill the chip)."""
    return 1024 if torch.device(device).type == "cpu" else 8192


def measure_peak(dtype: torch.dtype = torch.float32, *, size: int | None = None, repeats: int = 5,
                 min_seconds: float = 0.2, device: str | torch.device = "cpu") -> float:
    """Matmul FLOP/s of this machine in ``dtype`` with torch's current threads: median over ``repeats`` timings.

    Each timing runs ``n×n @ n×n`` until ``min_seconds`` pass (after one warm-up call); ``size``
    defaults to :func:`peak_size`. GPU timings wait for the device (``synchronize``) before reading
    the clock.
    """
    device = torch.device(device)
    size = size or peak_size(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)  # warm-up: oneDNN / cuBLAS kernel selection, page faults
    sync()
    flops = 2.0 * size**3
    rates = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            torch.mm(a, b)
            n += 1
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        rates.append(n * flops / elapsed)
    return statistics.median(rates)


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Model FLOPs utilization: ``flops / seconds / peak`` (0 when nothing was timed)."""
    return flops / seconds / peak if seconds > 0 and peak > 0 else 0.0
