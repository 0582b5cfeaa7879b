"""Fake quantization: against a naive per-group loop, round-trip error bounds, the STE gradient, the schedule,
and the parametrized layers of a tiny Llama (bits switch, removal keeps the float master weights).

Run: ``pytest tests/training/test_fakequant.py``.
"""

from __future__ import annotations

import pytest
import torch

from distillm_edge.errors import UserError
from distillm_edge.training.fakequant import (
    apply_fake_quant,
    bits_at,
    dequantize,
    fake_quantize,
    quant_params,
    quantize,
)


def naive_fake_quantize(w: torch.Tensor, bits: int, group: int, symmetric: bool) -> torch.Tensor:
    """One group at a time, written out from the definitions (float32 like the kernel)."""
    out = torch.empty_like(w, dtype=torch.float32)
    for r in range(w.shape[0]):
        for c0 in range(0, w.shape[1], group):
            x = w[r, c0 : c0 + group].float()
            if symmetric:
                qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
                scale = max(float(x.abs().max()) / qmax, torch.finfo(torch.float32).tiny)
                zero = 0
            else:
                qmin, qmax = 0, 2**bits - 1
                lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
                scale = max((hi - lo) / qmax, torch.finfo(torch.float32).tiny)
                zero = int(min(max(round(-lo / scale), 0), qmax))
            scale = torch.tensor(scale, dtype=torch.float32)
            q = torch.clamp(torch.round(x * (1.0 / scale)) + zero, qmin, qmax)
            out[r, c0 : c0 + group] = (q - zero) * scale
    return out


@pytest.mark.parametrize("bits", [16, 8, 4, 2])
@pytest.mark.parametrize("symmetric", [True, False])
def test_matches_the_naive_per_group_reference(bits, symmetric):
    torch.manual_seed(bits)
    w = torch.randn(6, 96) * torch.rand(6, 1) * 3 + 0.2  # rows of different scales, not centred
    fast = fake_quantize(w, bits, 32, symmetric)
    ref = naive_fake_quantize(w, bits, 32, symmetric)
    scale = quant_params(w, bits, 32, symmetric).scale.repeat_interleave(32).view(6, 96)
    # rounding ties may land one level apart (x/s vs x*(1/s)); everything else agrees to float rounding
    assert ((fast - ref).abs() <= scale * 1.0001).all()
    assert ((fast - ref).abs() <= 1e-6 * ref.abs() + 1e-7).float().mean() > 0.99


@pytest.mark.parametrize("symmetric", [True, False])
def test_round_trip_error_bounds_and_16_bits_is_identity(symmetric):
    torch.manual_seed(0)
    w = torch.randn(16, 128)
    for bits in (16, 8, 4):
        p = quant_params(w, bits, 32, symmetric)
        q = quantize(w, p, 32)
        assert q.min() >= p.qmin and q.max() <= p.qmax
        back = dequantize(q, p, 32)
        half = (p.scale / 2).repeat_interleave(32).view(16, 128)
        assert ((back - w).abs() <= half * 1.0001 + 1e-7).all()  # within half a step
        assert torch.equal(fake_quantize(w, bits, 32, symmetric), back)
        assert len(torch.unique(back.view(-1, 32)[0])) <= 2**bits
    assert torch.allclose(fake_quantize(w, 16, 32, symmetric), w, atol=w.abs().max().item() * 4e-5, rtol=0)
    err4 = (fake_quantize(w, 4, 32, symmetric) - w).abs().mean()
    err8 = (fake_quantize(w, 8, 32, symmetric) - w).abs().mean()
    assert err8 < err4 / 8  # each bit halves the step


def test_zero_groups_and_bf16_weights():
    w = torch.zeros(2, 64)
    w[1, 32:] = torch.linspace(-1, 1, 32)
    out = fake_quantize(w, 4, 32, False)
    assert torch.equal(out[0], w[0]) and torch.isfinite(out).all()
    wb = torch.randn(4, 64, dtype=torch.bfloat16)
    assert fake_quantize(wb, 8, 32).dtype == torch.bfloat16


def test_straight_through_gradient_is_the_identity_inside_the_range():
    torch.manual_seed(1)
    w = torch.randn(8, 64, requires_grad=True)
    upstream = torch.randn(8, 64)
    for symmetric in (True, False):
        w.grad = None
        (fake_quantize(w, 4, 32, symmetric) * upstream).sum().backward()
        assert torch.equal(w.grad, upstream)


def test_schedule_falls_16_8_4_and_bad_schedules_are_named():
    total = 30
    assert [bits_at(s, total) for s in (0, 9, 10, 19, 20, 29)] == [16, 16, 8, 8, 4, 4]
    assert bits_at(5, 10, [[0.0, 8], [0.5, 4]]) == 4
    for bad in ([[0.1, 8]], [[0.0, 8], [0.0, 4]], [[0.0, 8], [1.0, 4]], [[0.0, 1]], []):
        with pytest.raises(UserError, match="fake_quant"):
            bits_at(0, 10, bad)


def test_parametrized_llama_layers_switch_bits_and_remove_keeps_master_weights():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    master = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(0, 128, (1, 12))
    ref = model(input_ids=ids).logits
    fq = apply_fake_quant(model, group_size=32)
    # 7 projections per block; down_proj has in_features 96 = 3 groups of 32
    assert len(fq.layers) == 14 and not fq.skipped and "lm_head" not in fq.layers
    assert torch.equal(model(input_ids=ids).logits, ref)  # bits None: off
    fq.set_bits(4)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert torch.equal(q_proj.weight, fake_quantize(master["model.layers.0.self_attn.q_proj.weight"], 4, 32))
    out4 = model(input_ids=ids).logits
    assert not torch.allclose(out4, ref, atol=1e-3)
    out4.sum().backward()  # gradients reach the float master weights
    assert q_proj.parametrizations.weight.original.grad is not None
    fq.set_bits(16)
    assert torch.allclose(model(input_ids=ids).logits, ref, atol=1e-3)
    fq.remove()
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), master[n]), n
    with pytest.raises(UserError, match="matches no linear layer"):
        apply_fake_quant(model, include=r"nothing_here")
