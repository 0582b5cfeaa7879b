"""MFU groundwork: FLOPs per token against torch's FlopCounterMode on tiny Llamas, and the peak measurement.

Run: ``pytest tests/training/test_mfu.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from distillm_edge.training.mfu import (
    ModelShape,
    forward_flops_per_token,
    measure_peak,
    mfu,
    sequence_flops,
    train_flops_per_token,
)


def tiny(tied: bool, kv_heads: int = 2, head_dim: int | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=kv_heads, head_dim=head_dim, max_position_embeddings=256, tie_word_embeddings=tied)
    model = LlamaForCausalLM(cfg)
    model.set_attn_implementation("eager")  # attention as bmm, which the counter sees (CPU sdpa kernels it does not)
    return model


def counted(model, length: int, *, train: bool, keep: torch.Tensor | None = None) -> int:
    ids = torch.randint(0, model.config.vocab_size, (1, length))
    with FlopCounterMode(display=False) as fc:
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=keep if keep is not None else 0).logits
        if train:
            logits.float().pow(2).sum().backward()
    return fc.get_total_flops()


@pytest.mark.parametrize("tied,kv_heads,head_dim", [(False, 2, None), (True, 4, None), (False, 1, 32)])
@pytest.mark.parametrize("length", [1, 37, 128])
def test_train_and_forward_flops_match_the_counter_exactly(tied, kv_heads, head_dim, length):
    model = tiny(tied, kv_heads, head_dim)
    shape = ModelShape.from_config(model.config)
    assert counted(model, length, train=True) == sequence_flops(shape, length)
    assert counted(model, length, train=False) == sequence_flops(shape, length, train=False)


def test_head_only_on_kept_rows():
    model = tiny(False)
    shape = ModelShape.from_config(model.config)
    keep = torch.zeros(1, 50, dtype=torch.bool)
    keep[0, 20:45] = True
    assert counted(model, 50, train=True, keep=keep) == sequence_flops(shape, 50, head_rows=25)


def test_per_token_formula_by_hand():
    # SmolLM2-135M: 30 layers, 576 wide, 9 heads of 64, 3 kv heads, MLP 1536, vocab 49152
    shape = ModelShape(layers=30, hidden=576, heads=9, kv_heads=3, head_dim=64, intermediate=1536, vocab=49152)
    per_layer = 576 * 576 + 2 * 576 * 192 + 576 * 576 + 3 * 576 * 1536
    assert shape.block_params == 30 * per_layer
    n = 30 * per_layer + 49152 * 576
    assert forward_flops_per_token(shape, 256) == 2 * n + 4 * 30 * 9 * 64 * 256
    assert train_flops_per_token(shape, 256) == 3 * forward_flops_per_token(shape, 256)
    assert 130e6 < n < 140e6  # the model's name


def test_peak_measurement_and_mfu():
    torch.set_num_threads(1)
    for dtype in (torch.float32, torch.bfloat16):
        peak = measure_peak(dtype, size=128, repeats=2, min_seconds=0.01)
        assert math.isfinite(peak) and peak > 0
    assert mfu(2e9, 2.0, 1e9) == 1.0 and mfu(1.0, 0.0, 1e9) == 0.0
