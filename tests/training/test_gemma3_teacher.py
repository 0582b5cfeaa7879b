"""A Gemma-3 4B-class teacher (MedGemma-4B, gemma-3-4b-it) loads as ``Gemma3ForConditionalGeneration``, whose config
nests ``vocab_size``/``num_hidden_layers``/``hidden_size`` under ``text_config``. A tiny random multimodal Gemma-3
(text + vision config, built offline) must teach through KD, hidden-state alignment (projection from the student's
width) and the learned vocabulary projection.

Run: ``pytest tests/training/test_gemma3_teacher.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tinyrun import tiny_config, train_rows

from distillm_edge.training import trainer


@pytest.fixture(scope="module")
def tiny_gemma3_mm_dir(tmp_path_factory, gemma_dir) -> Path:
    """A 2-layer, 48-wide random multimodal Gemma-3 (1-layer vision tower) with the real Gemma tokenizer."""
    from transformers import (
        AutoTokenizer,
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    torch.manual_seed(4)
    text = Gemma3TextConfig(vocab_size=262144, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                            sliding_window=64, layer_types=["sliding_attention", "full_attention"],
                            bos_token_id=2, eos_token_id=1, pad_token_id=0)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    cfg = Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                       image_token_index=262144, boi_token_index=255999, eoi_token_index=256000)
    assert not hasattr(cfg, "num_hidden_layers")  # the nesting that broke every config.<field> access
    out = tmp_path_factory.mktemp("tiny_gemma3_mm")
    Gemma3ForConditionalGeneration(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(gemma_dir).save_pretrained(out)
    return out


@pytest.mark.parametrize("method", ["shared_vocab", "projection"])
def test_multimodal_gemma3_teacher_distils_with_hidden_alignment(tiny_llama_dir, tiny_gemma3_mm_dir, tiny_data,
                                                                 tmp_path, method):
    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / method, max_steps=2, save_every=0,
                      teachers=[{"model": str(tiny_gemma3_mm_dir)}], layer_map={"0": 1}, hidden={"weight": 1.0},
                      cross_tokenizer={"method": method})
    run_dir = trainer.run(cfg)
    rows = train_rows(run_dir)
    name = tiny_gemma3_mm_dir.name
    assert all(math.isfinite(r[f"loss/kd/{name}"]) and r["loss/hidden"] > 0 for r in rows)
    if method == "projection":
        assert math.isfinite(rows[0][f"loss/projection_ce/{name}"])
