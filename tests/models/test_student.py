"""Tests for layer selection and student building (distillm_edge/models/student.py)."""

from __future__ import annotations

import pytest
import torch

from distillm_edge.errors import UserError
from distillm_edge.models.student import build_student, layer_map, select_layers


def test_even_spacing_matches_the_research_map():
    assert select_layers(32, "even:8") == [0, 4, 9, 13, 18, 22, 27, 31]
    assert select_layers(30, "even:10") == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert select_layers(5, "even:1") == [0]
    assert select_layers(4, "even:4") == [0, 1, 2, 3]


def test_first_last_and_explicit():
    assert select_layers(30, "first-last:8,7") == list(range(8)) + list(range(23, 30))
    assert select_layers(30, "0, 5,29") == [0, 5, 29]


@pytest.mark.parametrize("bad", ["even:0", "even:31", "first-last:20,20", "3,2", "0,30", "half", "1,1"])
def test_bad_selections_are_clear_errors(bad):
    with pytest.raises(UserError, match="layers"):
        select_layers(30, bad)


def _tiny(model_cls, cfg_cls, **kw):
    torch.manual_seed(0)
    return model_cls(cfg_cls(vocab_size=97, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=64, **kw)).eval()


def _naive_forward(teacher, layers, ids):
    """Reference: run the teacher's own kept layers by hand (embeddings → kept blocks → norm → head)."""
    inner = teacher.model
    h = inner.embed_tokens(ids)
    pos = torch.arange(ids.shape[1])[None]
    cos_sin = inner.rotary_emb(h, pos)
    mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)[None, None]
    for i in layers:
        out = inner.layers[i](h, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin)
        h = out[0] if isinstance(out, tuple) else out
    return teacher.lm_head(inner.norm(h))


def test_student_equals_teacher_running_only_its_kept_layers():
    from transformers import LlamaConfig, LlamaForCausalLM

    teacher = _tiny(LlamaForCausalLM, LlamaConfig, num_hidden_layers=6)
    layers = [0, 2, 5]
    student = build_student(teacher, layers).eval()
    assert student.config.num_hidden_layers == 3
    assert layer_map(student.config) == {0: 0, 1: 2, 2: 5}
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[2].mlp.up_proj.weight)
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        got = student(ids).logits
        want = _naive_forward(teacher, layers, ids)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert teacher.config.num_hidden_layers == 6  # the teacher's config is untouched


def test_gemma3_layer_types_are_subset():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    teacher = _tiny(Gemma3ForCausalLM, Gemma3TextConfig, num_hidden_layers=6, head_dim=8, sliding_window=4)
    types = list(teacher.config.layer_types)
    student = build_student(teacher, [0, 5])
    assert student.config.layer_types == [types[0], types[5]]
    ids = torch.randint(0, 97, (1, 7))
    with torch.no_grad():
        assert torch.isfinite(student(ids).logits).all()


def test_saved_student_keeps_its_layer_map(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    student = build_student(_tiny(LlamaForCausalLM, LlamaConfig, num_hidden_layers=4), [0, 3])
    student.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert layer_map(again.config) == {0: 0, 1: 3}
