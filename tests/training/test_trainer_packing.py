"""``packing: true`` in the trainer: a packed step trains exactly like the same examples run one by one.

A step of four examples as four micro-batches (``packing: false``, ``grad_accum: 4``) and as one packed
row (``packing: true``, ``grad_accum: 1``) must give the same loss parts and the same gradients (fp32;
up to summation order), with a same-tokenizer teacher and with Gemma-3's tokenizer as the other
teacher (its packed view runs with its own restarting position ids). If attention crossed an example
boundary in the student or in either teacher, the numbers would differ. A short run builds the packed
plan itself (fewer micro-batches, every example once) and logs MFU from per-example FLOPs. Hidden-state and
attention alignment to the same-tokenizer teacher are equal packed and apart too (each example's causal pairs
are counted, as if run alone); attention to the other-tokenizer teacher is refused when packed.

Run: ``pytest tests/training/test_trainer_packing.py``.
"""

from __future__ import annotations

import pytest
import torch
from test_step import step_grads
from tinyrun import tiny_config, train_rows

from distillm_edge.config import ConfigError
from distillm_edge.training import step, trainer


def cfg_for(tiny_llama_dir, tiny_gemma_dir, tiny_data, out, **changes):
    return tiny_config(tiny_llama_dir, tiny_data, out, max_grad_norm=1e9, freeze_embeddings=False,
                       teachers=[{"model": str(tiny_llama_dir), "weight": 0.6}, {"model": str(tiny_gemma_dir), "weight": 0.4}],
                       **changes)


@pytest.mark.parametrize("alignment", [{}, {"hidden": {"weight": 1.0}, "attention": {"weight": 0.5, "layers": [0]}}],
                         ids=["kd", "kd+hidden+attention"])
def test_a_packed_step_equals_the_examples_run_apart(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path, alignment):
    examples = [0, 1, 2, 3]
    apart = step_grads(cfg_for(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path / "a", grad_accum=4, **alignment),
                       [[i] for i in examples])
    packed = step_grads(cfg_for(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path / "b", grad_accum=1,
                                packing=True, max_tokens_per_batch=4096, **alignment), [examples])
    assert apart.keys() == packed.keys() and apart
    for name in apart:
        torch.testing.assert_close(packed[name], apart[name], rtol=1e-4, atol=1e-6, msg=name)
    a, b = train_rows(tmp_path / "a")[0], train_rows(tmp_path / "b")[0]
    for key in ("loss", "loss/ce", "loss/kd") + (("loss/hidden", "loss/attention") if alignment else ()):
        assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), key  # kd ~0.009: a near-zero KL, absolute
    assert b["target_tokens"] == a["target_tokens"]


def test_packing_changes_what_a_cross_boundary_mask_would(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path):
    """The test above can fail: the same row with one sequence's positions (attention across examples) differs."""
    cfg = cfg_for(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path / "c", grad_accum=1, packing=True)
    r = trainer.setup(cfg)
    try:
        pads = {t.index: t.pad_id for t in r.teachers if not t.same_tokenizer}
        from distillm_edge.training.teachers import pad_id

        r.plan = [[0, 1]]
        batch = step.step_batches(r, 0, 1, 0, pads, pad_id(r.tokenizer))[0]
        packed = float(step.compute_loss(r, batch, tau=1.0)["ce"])
        batch.position_ids = torch.arange(batch.input_ids.shape[1]).view(1, -1)  # one long sequence
        crossed = float(step.compute_loss(r, batch, tau=1.0)["ce"])
        assert abs(packed - crossed) > 1e-4
    finally:
        trainer.cleanup(r)


def test_a_packed_run_builds_its_plan_and_logs(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path):
    cfg = cfg_for(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path / "run", packing=True, max_tokens_per_batch=256,
                  grad_accum=1, max_steps=3)
    r = trainer.setup(cfg)
    try:
        assert sorted(i for b in r.plan for i in b) == list(range(len(r.train_examples)))
        assert len(r.plan) < len(r.train_examples) and max(map(len, r.plan)) > 1
        lengths = [len(e.student.ids) for e in r.train_examples]
        assert all(sum(lengths[i] for i in b) <= 256 for b in r.plan if len(b) > 1)
        trainer.train(r)
    finally:
        trainer.cleanup(r)
    rows = train_rows(tmp_path / "run")
    assert len(rows) == 3 and all(row["loss"] == row["loss"] for row in rows)


@pytest.mark.parametrize("changes, message", [
    ({"max_tokens_per_batch": 32}, "max_tokens_per_batch 32"),
    ({"batch_size": 2}, "batch_size 2 with packing"),
])
def test_bad_packing_settings_name_the_option(tiny_llama_dir, tiny_data, tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(tiny_llama_dir, tiny_data, tmp_path, packing=True, **changes)


def test_attention_to_an_other_tokenizer_teacher_is_refused_when_packed(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path):
    cfg = cfg_for(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path / "x", packing=True,
                  attention={"weight": 0.5, "layers": [0], "teacher": 1})
    with pytest.raises(ConfigError, match="packing: true with attention alignment to teachers\\[1\\]"):
        trainer.setup(cfg)
