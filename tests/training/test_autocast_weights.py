"""Weights cast once for bf16 autocast (``precision.AutocastWeights``) give exactly the numbers of per-call casts.

Under bf16 autocast every fp32 weight a matmul touches is rounded to bf16 on every call. The trainer
instead keeps bf16 copies of the teachers' Linear weights (and of the student's frozen Linears: the
tied LM head when embeddings are frozen), made once. These tests check that this changes no value:

- a tiny Llama's logits under autocast with the copies swapped in equal those without, bit for bit,
  and outside autocast the fp32 weights (and the tied input embedding) are untouched;
- one optimizer step of a two-teacher run (same-tokenizer Llama + Gemma-3's 262k tokenizer, whose
  shared-vocabulary head is pre-cast too) under ``precision: bf16`` produces the same gradients
  with and without the copies.

Run: ``pytest tests/training/test_autocast_weights.py``.
"""

from __future__ import annotations

import torch
from test_step import step_grads
from tinyrun import tiny_config
from transformers import AutoModelForCausalLM

from distillm_edge.training import precision, teachers


def test_swapped_bf16_linears_equal_autocast_casts_and_restore_fp32(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    low = precision.AutocastWeights(model, torch.bfloat16)
    assert low.pairs and all(w.dtype == torch.bfloat16 for _, _, w in low.pairs)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(ids).logits
        with low.active():
            assert model.get_output_embeddings().weight.dtype == torch.bfloat16
            got = model(ids).logits
    assert torch.equal(got, expected)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.get_input_embeddings().weight.dtype == torch.float32
    with torch.no_grad():  # outside autocast: plain fp32 again
        assert model(ids).logits.dtype == torch.float32


def test_frozen_only_skips_trainable_linears(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    model.get_output_embeddings().requires_grad_(False)
    low = precision.AutocastWeights(model, torch.bfloat16, frozen_only=True)
    assert [m for m, _, _ in low.pairs] == [model.get_output_embeddings()]


def test_a_bf16_step_has_the_same_gradients_with_and_without_the_copies(tiny_llama_dir, tiny_gemma_dir, tiny_data,
                                                                       tmp_path, monkeypatch):
    def cfg(out):
        return tiny_config(tiny_llama_dir, tiny_data, tmp_path / out, precision="bf16", freeze_embeddings=True,
                           teachers=[{"model": str(tiny_llama_dir), "weight": 0.6},
                                     {"model": str(tiny_gemma_dir), "weight": 0.4}])

    used = {"teacher": 0, "student": 0}
    real_prepare, real_weights = teachers.prepare_for_autocast, precision.AutocastWeights

    def counting_prepare(ts, dtype):
        added = real_prepare(ts, dtype)
        used["teacher"] += sum(len(t.autocast_weights.pairs) for t in ts)
        assert ts[1].shared_head_low.dtype == torch.bfloat16  # the cross-tokenizer teacher's shared head
        return added

    def counting_weights(*args, **kwargs):
        w = real_weights(*args, **kwargs)
        if kwargs.get("frozen_only"):  # the student's (a teacher's copies come through prepare_for_autocast)
            used["student"] += len(w.pairs)
        return w

    monkeypatch.setattr(teachers, "prepare_for_autocast", counting_prepare)
    monkeypatch.setattr(precision, "AutocastWeights", counting_weights)
    plan = [[0], [1]]
    with_copies = step_grads(cfg("a"), plan)
    assert used["teacher"] > 0 and used["student"] == 1  # the student's frozen tied head

    class NoCopies:
        def __init__(self, *args, **kwargs):
            self.pairs, self.dtype = [], torch.bfloat16

    monkeypatch.setattr(teachers, "prepare_for_autocast", lambda ts, dtype: 0)
    monkeypatch.setattr(precision, "AutocastWeights", NoCopies)
    without = step_grads(cfg("b"), plan)
    assert with_copies.keys() == without.keys() and with_copies
    for name in with_copies:
        assert torch.equal(with_copies[name], without[name]), name
