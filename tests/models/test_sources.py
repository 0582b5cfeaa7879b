"""Tests for model specs, GGUF materialization and loading (distillm_edge/models/sources.py, loading.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from distillm_edge.errors import UserError
from distillm_edge.models import LoadOptions, load_model, resolve
from distillm_edge.models.sources import MANIFEST, gguf_path, verify


def test_resolve_classifies_every_kind(tmp_path):
    assert resolve("smollm2-135m-instruct").kind == "embedded"
    assert resolve("gemma-3-270m").kind == "embedded"
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve(tmp_path / "m.gguf").kind == "gguf"
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert resolve(tmp_path / "hf").kind == "hf_dir"
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"")
    assert resolve(tmp_path / "onnx").kind == "onnx_dir"
    assert resolve("m42-health/Llama3-Med42-8B").kind == "hub"


def test_bad_specs_say_what_is_accepted(tmp_path):
    with pytest.raises(UserError, match="embedded name"):
        resolve("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="config.json"):
        resolve(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a model"):
        resolve(tmp_path / "notes.txt")


def test_offline_hub_id_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="offline mode is on"):
        load_model("distillm-edge-test/not-a-real-model")


def test_onnx_dir_is_refused_by_torch_loading(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(UserError, match="ONNX Runtime backend"):
        load_model(str(tmp_path))


@pytest.mark.slow
def test_materialized_smollm2_is_a_verified_checkpoint(smollm2_dir, tmp_path):
    manifest = json.loads((smollm2_dir / MANIFEST).read_text())
    assert manifest["architecture"] == "llama" and manifest["vocab_size"] == 49152
    assert verify(smollm2_dir) == []
    copy = tmp_path / "copy"
    shutil.copytree(smollm2_dir, copy)
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert verify(copy) == ["config.json"]
    assert gguf_path(resolve("smollm2-135m-instruct")).name == "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_loaded_embedded_teacher_is_a_working_medical_lm(smollm2_dir):
    model, tok = load_model("smollm2-135m-instruct", LoadOptions(dtype="bf16"))
    assert next(model.parameters()).dtype == torch.bfloat16
    assert tok.chat_template and "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False)
    text = "Hypertension is persistently elevated blood pressure in the arteries. It is a major risk factor for stroke."
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.float()
    assert torch.exp(loss) < 200  # a random model scores ~49,152


@pytest.mark.slow
def test_gemma_teacher_has_its_own_vocab_and_a_chat_template(gemma_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma_dir)
    assert len(tok) == 262144
    text = tok.apply_chat_template([{"role": "user", "content": "What is angina?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.startswith("<bos><start_of_turn>user\nWhat is angina?<end_of_turn>\n<start_of_turn>model\n")


def test_nf4_loading_on_cpu_quantizes_linear_layers(tiny_llama_dir):
    with pytest.warns(UserWarning, match="slow"):
        model, _ = load_model(str(tiny_llama_dir), LoadOptions(quantization="nf4"))
    assert type(model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
