"""Attention per packed example (``training/packed_attention.py``) computes what the masked ``sdpa`` square does.

Tiny random models (a Llama with grouped KV heads; a Gemma-3 whose sliding-window layer has a window shorter than
the packed examples, so the window's mask path runs too), fp32: logits and parameter gradients of a packed row with
``packed_attention`` vs transformers' block-diagonal ``sdpa`` mask (tolerance 1e-5 absolute on logits, 1e-5 relative
on gradients; measured ~1e-6), and each example vs running it alone. The context switches only packed rows of
``sdpa`` models, and restores the model's attention after.

Run: ``pytest tests/training/test_packed_attention.py`` (seconds).
"""

from __future__ import annotations

import pytest
import torch

from distillm_edge.training.batches import model_inputs
from distillm_edge.training.packed_attention import NAME, packed_attention


def llama(**changes):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256, **changes)
    return LlamaForCausalLM(cfg).eval()


def gemma(window: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(1)
    cfg = Gemma3TextConfig(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                           sliding_window=window, layer_types=["sliding_attention", "full_attention"])
    return Gemma3ForCausalLM(cfg).eval()


def packed_row(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, 100, (1, sum(lengths)), generator=g)
    pos = torch.cat([torch.arange(n) for n in lengths]).view(1, -1)
    return ids, pos


LENGTHS = [23, 40, 7, 31]


@pytest.mark.parametrize("make", [lambda: llama(), lambda: gemma(window=16)], ids=["llama-gqa", "gemma3-sliding"])
def test_packed_attention_matches_the_masked_square_and_each_example_alone(make):
    torch.set_num_threads(1)
    model = make()
    model.set_attn_implementation("sdpa")
    ids, pos = packed_row(LENGTHS)
    inputs = model_inputs(ids, torch.ones_like(ids), pos, "cpu")
    with torch.no_grad():
        masked = model(**inputs).logits
        with packed_attention(model, pos):
            assert model.config._attn_implementation == NAME
            fast = model(**inputs).logits
        assert model.config._attn_implementation == "sdpa"  # restored
        alone = torch.cat([model(input_ids=ids[:, a:a + n]).logits
                           for a, n in zip([0, 23, 63, 70], LENGTHS, strict=True)], dim=1)
    assert (fast - masked).abs().max() < 1e-5
    assert (fast - alone).abs().max() < 1e-5
    # a segment longer than the window really is windowed: it differs from full causal attention there
    if getattr(model.config, "sliding_window", None):
        with torch.no_grad():
            model.config.sliding_window = 10**6
            for layer in model.model.layers:
                layer.self_attn.sliding_window = None if layer.self_attn.sliding_window is None else 10**6
            unwindowed = model(**inputs).logits
        assert (unwindowed - fast).abs().max() > 1e-4


def test_packed_attention_gradients_equal_the_masked_path():
    torch.set_num_threads(1)
    model = llama().train()
    model.set_attn_implementation("sdpa")
    ids, pos = packed_row(LENGTHS)
    inputs = model_inputs(ids, torch.ones_like(ids), pos, "cpu")

    def grads(fast: bool) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        with packed_attention(model, pos) if fast else torch.enable_grad():
            logits = model(**inputs).logits
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters()]

    loss_ref, ref = grads(False)
    loss_fast, fast = grads(True)
    assert abs(loss_fast - loss_ref) < 1e-6
    for a, b in zip(fast, ref, strict=True):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-8


def test_only_packed_rows_of_sdpa_models_switch():
    model = llama()
    model.set_attn_implementation("sdpa")
    with packed_attention(model, None):  # padded batch: the mask path stays
        assert model.config._attn_implementation == "sdpa"
    model.set_attn_implementation("eager")  # attention maps need eager: left alone
    with packed_attention(model, torch.arange(4).view(1, -1)):
        assert model.config._attn_implementation == "eager"


def test_a_padded_batch_is_refused_by_the_attention_function():
    from distillm_edge.training.packed_attention import packed_sdpa_attention

    q = torch.zeros(2, 4, 8, 16)
    with pytest.raises(ValueError, match="one packed row"):
        packed_sdpa_attention(llama().model.layers[0].self_attn, q, q, q, None)
