"""Progressive quantization-aware training: fake-quantize the student's linear weights, bits falling 16 → 8 → 4.

The student ships as 4-bit GGUF (Q4_K_M: blocks of 32 weights along the input dimension, a scale
and a minimum per block) or ONNX int4 (MatMulNBits, blocks of 32 along K). Training it with its
linear weights *fake-quantized* the same way (quantize → dequantize in the forward pass, the
float "master" weights updated by the optimizer) teaches it to tolerate that rounding; lowering
the bit-width on a schedule (16 → 8 → 4) lets it first learn, then adapt.

- :func:`fake_quantize` (pure): per-group affine quantization of a weight [out, in] in groups of
  ``group_size`` consecutive input columns, ``symmetric`` (scale = absmax / (2^(b-1) - 1), codes
  in [-2^(b-1), 2^(b-1) - 1], zero point 0) or asymmetric (range [min(w, 0), max(w, 0)], scale =
  range / (2^b - 1), integer zero point, codes in [0, 2^b - 1]). The kernel is torch's own
  ``fake_quantize_per_channel_affine`` on the [groups, group_size] view (each group a "channel"),
  which is also the straight-through estimator: the gradient is the identity for weights inside
  the quantization range and 0 outside (with min/max scales every weight is inside, so it is the
  identity). Scales are computed from the detached weights (not learned). Tested against a
  naive per-group loop in ``tests/training/test_fakequant.py``.
- :func:`bits_at`: the bit-width at a step from a schedule of ``(fraction of training, bits)``
  pairs, default ``((0.0, 16), (1/3, 8), (2/3, 4))``. 16 bits is fake quantization too, with
  65,535 levels per group (error ≤ scale/2 ≈ absmax · 1.5e-5: identity for practical purposes).
- :func:`apply_fake_quant`: registers a ``torch.nn.utils.parametrize`` parametrization on the
  ``weight`` of every ``nn.Linear`` whose name matches ``include`` (default: the decoder blocks'
  attention and MLP projections; the tied embedding/LM head stays float, as the exporters keep
  it at 8 bits or more). Returns a :class:`FakeQuant` handle: ``set_bits(b)`` (None = off),
  ``remove()`` (drops the parametrizations, keeping the float master weights).

Integration (the trainer, once issue 9's refactor lands):

- config section ``fake_quant: {schedule: [[0.0, 16], [0.33, 8], [0.66, 4]], group_size: 32,
  symmetric: false, include: '...'}`` (null: off);
- setup: ``fq = apply_fake_quant(student, group_size=..., symmetric=..., include=...)`` *before*
  ``accelerator.prepare`` and before a checkpoint is loaded (the parametrized state-dict keys,
  ``...parametrizations.weight.original``, must match on resume); log ``fq.layers``/``fq.skipped``;
- each optimizer step, before the micro-batches: ``fq.set_bits(bits_at(step, total_steps,
  schedule))``; log ``bits`` in the step line;
- finish: ``fq.remove()`` before ``save_student`` (the saved model holds the float weights; the
  exporters quantize them to Q4_K_M / int4).

Test: ``pytest tests/training/test_fakequant.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from distillm_edge.errors import UserError

DEFAULT_SCHEDULE: tuple[tuple[float, int], ...] = ((0.0, 16), (1 / 3, 8), (2 / 3, 4))
DEFAULT_INCLUDE = r"layers\.\d+\.(self_attn|mlp)\.\w+_proj$"


@dataclass(frozen=True)
class QuantParams:
    """Per-group ``scale`` [G] fp32 and integer ``zero`` [G], codes in [qmin, qmax]."""

    scale: Tensor
    zero: Tensor
    qmin: int
    qmax: int


def check_bits(bits: int) -> int:
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise UserError(f"fake_quant bits {bits!r}: must be an integer from 2 to 16 (e.g. 16, 8, 4).")
    return bits


def _groups(w: Tensor, group_size: int) -> Tensor:
    if w.dim() != 2:
        raise ValueError(f"fake quantization expects a 2-D weight [out, in], got shape {tuple(w.shape)}")
    if group_size < 1 or w.shape[1] % group_size:
        raise ValueError(f"in_features {w.shape[1]} is not a multiple of group_size {group_size}")
    return w.reshape(-1, group_size)


def quant_params(w: Tensor, bits: int, group_size: int = 32, symmetric: bool = False) -> QuantParams:
    """Scales and zero points of each group of ``group_size`` input columns of ``w`` [out, in] (no grad)."""
    check_bits(bits)
    g = _groups(w.detach(), group_size).float()
    tiny = torch.finfo(torch.float32).tiny
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = (g.abs().amax(dim=1) / qmax).clamp_min(tiny)
        return QuantParams(scale, torch.zeros_like(scale, dtype=torch.int32), -qmax - 1, qmax)
    qmax = 2**bits - 1
    lo, hi = g.amin(dim=1).clamp(max=0.0), g.amax(dim=1).clamp(min=0.0)
    scale = ((hi - lo) / qmax).clamp_min(tiny)
    zero = torch.round(-lo / scale).clamp(0, qmax).to(torch.int32)
    return QuantParams(scale, zero, 0, qmax)


def quantize(w: Tensor, params: QuantParams, group_size: int = 32) -> Tensor:
    """Integer codes [out, in] (int32) of ``w``."""
    g = _groups(w.detach(), group_size).float()
    q = torch.round(g / params.scale[:, None]) + params.zero[:, None]
    return q.clamp(params.qmin, params.qmax).to(torch.int32).reshape(w.shape)


def dequantize(q: Tensor, params: QuantParams, group_size: int = 32) -> Tensor:
    """fp32 weights [out, in] from integer codes."""
    g = _groups(q, group_size).float()
    return ((g - params.zero[:, None]) * params.scale[:, None]).reshape(q.shape)


def fake_quantize(w: Tensor, bits: int, group_size: int = 32, symmetric: bool = False) -> Tensor:
    """``dequantize(quantize(w))`` in ``w``'s dtype, with the straight-through gradient (see the module docstring)."""
    p = quant_params(w, bits, group_size, symmetric)
    g = _groups(w, group_size)
    out = torch.fake_quantize_per_channel_affine(g.float(), p.scale, p.zero, 0, p.qmin, p.qmax)
    return out.reshape(w.shape).to(w.dtype)


def bits_at(step: int, total_steps: int, schedule: Sequence[Sequence[float]] = DEFAULT_SCHEDULE) -> int:
    """The bit-width at optimizer ``step`` (0-based) of ``total_steps``: the last entry whose fraction ≤ step/total."""
    check_schedule(schedule)
    frac = step / max(1, total_steps)
    bits = int(schedule[0][1])
    for start, b in schedule:
        if frac >= start:
            bits = int(b)
    return bits


def check_schedule(schedule: Sequence[Sequence[float]]) -> None:
    """A UserError unless ``schedule`` is ``[[0.0, bits], [fraction, bits], ...]`` with rising fractions."""
    example = "e.g. [[0.0, 16], [0.33, 8], [0.66, 4]]"
    if not schedule or any(len(x) != 2 for x in schedule):
        raise UserError(f"fake_quant.schedule {list(schedule)}: give [fraction of training, bits] pairs, {example}.")
    fracs = [float(x[0]) for x in schedule]
    if fracs[0] != 0.0 or any(b <= a for a, b in zip(fracs, fracs[1:])) or fracs[-1] >= 1.0:
        raise UserError(f"fake_quant.schedule {list(schedule)}: fractions must start at 0.0 and rise below 1.0, {example}.")
    for _, b in schedule:
        check_bits(int(b))


class _FakeQuantWeight(nn.Module):
    """A parametrization: the weight as the forward pass sees it (fake-quantized at ``bits``, or as is)."""

    def __init__(self, group_size: int, symmetric: bool) -> None:
        super().__init__()
        self.group_size, self.symmetric = group_size, symmetric
        self.bits: int | None = None

    def forward(self, w: Tensor) -> Tensor:
        if self.bits is None:
            return w
        return fake_quantize(w, self.bits, self.group_size, self.symmetric)


@dataclass
class FakeQuant:
    """Handle over the parametrized layers of one model."""

    model: nn.Module
    layers: list[str]
    skipped: list[str]  # matched the pattern but in_features is not a multiple of group_size
    _params: list[_FakeQuantWeight] = field(default_factory=list, repr=False)
    bits: int | None = None

    def set_bits(self, bits: int | None) -> None:
        if bits is not None:
            check_bits(bits)
        self.bits = bits
        for p in self._params:
            p.bits = bits

    def remove(self) -> None:
        """Drop the parametrizations; each layer keeps its float (master) weight."""
        from torch.nn.utils import parametrize

        for name in self.layers:
            parametrize.remove_parametrizations(self.model.get_submodule(name), "weight", leave_parametrized=False)
        self._params.clear()
        self.layers = []


def apply_fake_quant(model: nn.Module, *, group_size: int = 32, symmetric: bool = False,
                     include: str = DEFAULT_INCLUDE, bits: int | None = None) -> FakeQuant:
    """Fake-quantize the weight of every ``nn.Linear`` whose qualified name matches ``include`` (re.search)."""
    from torch.nn.utils import parametrize

    try:
        pattern = re.compile(include)
    except re.error as exc:
        raise UserError(f"fake_quant.include {include!r}: not a regular expression ({exc}).") from None
    handle = FakeQuant(model, [], [])
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or not pattern.search(name):
            continue
        if module.in_features % group_size:
            handle.skipped.append(name)
            continue
        p = _FakeQuantWeight(group_size, symmetric)
        parametrize.register_parametrization(module, "weight", p)
        handle.layers.append(name)
        handle._params.append(p)
    if not handle.layers:
        raise UserError(f"fake_quant.include {include!r}: matches no linear layer whose in_features is a multiple of "
                        f"group_size {group_size}" + (f" (skipped: {', '.join(handle.skipped[:5])})" if handle.skipped else "")
                        + "; adjust fake_quant.include or group_size.")
    handle.set_bits(bits)
    return handle
