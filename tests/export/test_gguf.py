"""GGUF writer round trip on the tiny Llama: metadata, tokenizer, tensors (read back with GGUFReader),
Llama-3 RoPE factors, manifests, and the errors for unsupported or missing checkpoints.

No llama.cpp here (see ``test_gguf_llamacpp.py``). Run: ``pytest tests/export/test_gguf.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from distillm_edge.errors import UserError
from distillm_edge.export.tensors import dequantize_q8_0, from_bf16, unpermute_qk


def _state(path):
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def _fields(path):
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items()}, {t.name: t for t in reader.tensors}


def test_metadata_and_tokenizer_round_trip(tiny_gguf, tiny_llama_dir, smollm2_tokenizer):
    fields, tensors = _fields(tiny_gguf("f32"))
    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == cfg["num_hidden_layers"] == 2
    assert fields["llama.context_length"] == cfg["max_position_embeddings"]
    assert fields["llama.embedding_length"] == 64 and fields["llama.feed_forward_length"] == 128
    assert fields["llama.attention.head_count"] == 4 and fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.rope.dimension_count"] == 16
    assert fields["llama.rope.freq_base"] == pytest.approx(cfg["rope_parameters"]["rope_theta"])
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg["rms_norm_eps"])
    assert fields["llama.vocab_size"] == len(smollm2_tokenizer)

    assert fields["tokenizer.ggml.model"] == "gpt2"
    # the probe hash says "smollm", but the materialized tokenizer splits numerals like GPT-2 (see gguf_vocab.py)
    assert fields["tokenizer.ggml.pre"] == "gpt-2"
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == len(smollm2_tokenizer)
    vocab = smollm2_tokenizer.get_vocab()
    assert all(vocab[t] == i for i, t in enumerate(tokens))
    types = fields["tokenizer.ggml.token_type"]
    assert types[:3] == [3, 3, 3] and types[100] == 1  # <|endoftext|> <|im_start|> <|im_end|> are control tokens
    assert len(fields["tokenizer.ggml.merges"]) > 40000
    assert fields["tokenizer.ggml.bos_token_id"] == smollm2_tokenizer.bos_token_id == 1
    assert fields["tokenizer.ggml.eos_token_id"] == smollm2_tokenizer.eos_token_id == 2
    assert fields["tokenizer.ggml.add_bos_token"] is False  # SmolLM2 adds no BOS
    assert fields["tokenizer.chat_template"] == smollm2_tokenizer.chat_template
    assert "output.weight" not in tensors  # tied head: llama.cpp reuses token_embd


def test_f32_tensors_round_trip_with_qk_permutation(tiny_gguf, tiny_llama_dir):
    _, tensors = _fields(tiny_gguf("f32"))
    state = _state(tiny_llama_dir)
    names = {
        "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "model.layers.1.self_attn.v_proj.weight": "blk.1.attn_v.weight",
        "model.layers.1.mlp.down_proj.weight": "blk.1.ffn_down.weight",
        "model.layers.0.input_layernorm.weight": "blk.0.attn_norm.weight",
    }
    for hf, gg in names.items():
        np.testing.assert_array_equal(np.asarray(tensors[gg].data).reshape(state[hf].shape), state[hf])
    q = np.asarray(tensors["blk.0.attn_q.weight"].data)
    k = np.asarray(tensors["blk.0.attn_k.weight"].data)
    assert not np.array_equal(q, state["model.layers.0.self_attn.q_proj.weight"])  # really permuted
    np.testing.assert_array_equal(unpermute_qk(q, 4), state["model.layers.0.self_attn.q_proj.weight"])
    np.testing.assert_array_equal(unpermute_qk(k, 2), state["model.layers.0.self_attn.k_proj.weight"])
    assert len(tensors) == 2 + 2 * 9


@pytest.mark.parametrize("outtype,ggml,tol", [("f16", "F16", 1e-3), ("bf16", "BF16", 8e-3), ("q8_0", "Q8_0", 1.6e-2)])
def test_reduced_types_dequantize_close_to_source(tiny_gguf, tiny_llama_dir, outtype, ggml, tol):
    _, tensors = _fields(tiny_gguf(outtype))
    state = _state(tiny_llama_dir)
    src = state["model.layers.1.mlp.up_proj.weight"]
    t = tensors["blk.1.ffn_up.weight"]
    assert t.tensor_type.name == ggml
    assert tensors["blk.1.ffn_norm.weight"].tensor_type.name == "F32"  # 1-D stays f32
    raw = np.asarray(t.data)
    back = {"F16": lambda: raw.astype(np.float32), "BF16": lambda: from_bf16(raw.view(np.uint16)),
            "Q8_0": lambda: dequantize_q8_0(raw)}[ggml]().reshape(src.shape)
    rel = np.abs(back - src).max() / np.abs(src).max()
    assert 0 < rel < tol


def _tiny_llama(tmp_path, tokenizer, **config):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **config)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


def test_llama3_rope_scaling_writes_rope_freqs(tmp_path, smollm2_tokenizer):
    from transformers import AutoTokenizer

    from distillm_edge.export.checkpoint import open_checkpoint
    from distillm_edge.export.gguf_convert import write_gguf
    from distillm_edge.export.tensors import llama3_rope_factors

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 128}
    src = _tiny_llama(tmp_path / "ckpt", smollm2_tokenizer, rope_parameters=rope, tie_word_embeddings=False)
    out = tmp_path / "m.gguf"
    write_gguf(open_checkpoint(src), AutoTokenizer.from_pretrained(src), out, "f32", "llama3-rope")
    _, tensors = _fields(out)
    np.testing.assert_array_equal(np.asarray(tensors["rope_freqs.weight"].data),
                                  llama3_rope_factors(16, 500000.0, 8.0, 1.0, 4.0, 128))
    assert "output.weight" in tensors  # untied head is written


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from distillm_edge.export.checkpoint import open_checkpoint

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    Gemma3ForCausalLM(cfg).save_pretrained(tmp_path)
    with pytest.raises(UserError, match=r"Gemma3ForCausalLM.*cannot be written as GGUF.*LlamaForCausalLM.*convert_hf_to_gguf"):
        open_checkpoint(tmp_path)


def test_missing_checkpoint_and_non_checkpoint_dir(tmp_path):
    from distillm_edge.export import ExportConfig, run

    with pytest.raises(UserError, match="not found"):
        run(ExportConfig(model=str(tmp_path / "no-such-student"), outdir=tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a Hugging Face checkpoint"):
        run(ExportConfig(model=str(tmp_path / "empty"), outdir=tmp_path))


def test_config_validation():
    from distillm_edge.export import ExportConfig

    assert ExportConfig(model="x", format="gguf", quant="Q4_K_M").quant == "q4_k_m"
    assert ExportConfig(model="x", format="onnx").quant == "int8" and ExportConfig(model="x").quant == "f16"
    with pytest.raises(UserError, match="is a onnx type: use --format onnx"):
        ExportConfig(model="x", format="gguf", quant="int4")
    with pytest.raises(UserError, match="--format 'tflite'"):
        ExportConfig(model="x", format="tflite")
    with pytest.raises(UserError, match="max-ppl-increase"):
        ExportConfig(model="x", max_ppl_increase=0)


def test_unverified_export_writes_manifest_and_nothing_half_written(tmp_path, tiny_llama_dir):
    from distillm_edge.export import ExportConfig, run

    result = run(ExportConfig(model=str(tiny_llama_dir), format="gguf", quant="bf16", outdir=tmp_path, verify=False))
    assert result.artifact == tmp_path / f"{tiny_llama_dir.name}-bf16.gguf"
    assert sorted(p.name for p in tmp_path.iterdir()) == [result.artifact.name, result.manifest_path.name]
    m = json.loads(result.manifest_path.read_text())
    assert m["verified"] is False and m["parity"] is None and m["format"] == "gguf" and m["quant"] == "bf16"
    assert m["files"][result.artifact.name]["bytes"] == result.artifact.stat().st_size
    assert m["source"]["architecture"] == "LlamaForCausalLM" and len(m["source"]["sha256"]) == 64
    assert m["tokenizer"]["chat_template_sha256"] and m["export"]["pre_tokenizer"] == "gpt-2"
    assert m["export"]["tensor_types"] == {"BF16": 15, "F32": 5}
    assert m["versions"]["gguf"] != "not installed"
