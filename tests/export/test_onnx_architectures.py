"""ONNX export of the other architectures ONNX Runtime GenAI's builder supports — Qwen2, Qwen3,
Phi-3 — each proven by the same parity check as Llama (tiny random configs built here, with
SmolLM2's tokenizer and chat template; Gemma-3's own proof is ``test_onnx_gemma3.py``); multimodal
Gemma-3 refused for ONNX with the reason (see ``checkpoint.ONNX_NOT_YET``); and the GGUF writer's
refusal for all four naming llama.cpp's converter (which registers Gemma3ForCausalLM and
Gemma3ForConditionalGeneration, Qwen2/3 and Phi-3).

Run: ``pytest tests/export/test_onnx_architectures.py``.
"""

from __future__ import annotations

import pytest

from distillm_edge.errors import UserError

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512)


def _config(arch: str, vocab: int, tokenizer):
    import transformers as tf

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if arch == "gemma3":
        return tf.Gemma3ForCausalLM, tf.Gemma3TextConfig(vocab_size=vocab, head_dim=16, sliding_window=128, **COMMON, **ids)
    if arch == "qwen2":
        return tf.Qwen2ForCausalLM, tf.Qwen2Config(vocab_size=vocab, tie_word_embeddings=True, **COMMON, **ids)
    if arch == "qwen3":
        return tf.Qwen3ForCausalLM, tf.Qwen3Config(vocab_size=vocab, head_dim=16, tie_word_embeddings=True, **COMMON, **ids)
    return tf.Phi3ForCausalLM, tf.Phi3Config(vocab_size=vocab, original_max_position_embeddings=512, **COMMON, **ids)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory, smollm2_tokenizer):
    import torch

    made = {}

    def make(arch: str):
        if arch not in made:
            cls, cfg = _config(arch, len(smollm2_tokenizer), smollm2_tokenizer)
            torch.manual_seed(0)
            out = tmp_path_factory.mktemp(f"tiny_{arch}")
            cls(cfg).save_pretrained(out)
            smollm2_tokenizer.save_pretrained(out)
            made[arch] = out
        return made[arch]

    return make


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "phi3"])
def test_onnx_fp32_export_is_verified(tmp_path, tiny_dirs, small_parity, arch):
    from distillm_edge.export import ExportConfig, run

    result = run(ExportConfig(model=str(tiny_dirs(arch)), format="onnx", quant="fp32", outdir=tmp_path, threads=2))
    assert result.verified, result.failures
    p = result.manifest["parity"]
    assert p["top1_agreement"] >= 0.97 and p["mean_kl"] < 1e-4 and p["tokenizer_match"]


@pytest.mark.parametrize("arch", ["gemma3", "qwen2", "qwen3", "phi3"])
def test_gguf_refuses_them_naming_llamacpps_converter(tmp_path, tiny_dirs, arch):
    from distillm_edge.export import ExportConfig, run

    with pytest.raises(UserError, match="convert_hf_to_gguf.py") as info:
        run(ExportConfig(model=str(tiny_dirs(arch)), format="gguf", quant="f16", outdir=tmp_path, verify=False))
    assert "--format onnx" in str(info.value)  # each is offered for ONNX export, with its parity proof


def test_an_architecture_neither_writer_supports(tmp_path, smollm2_tokenizer):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    from distillm_edge.export.checkpoint import Checkpoint, check_supported

    ckpt = Checkpoint(tmp_path, json.loads((tmp_path / "config.json").read_text()), {})
    for fmt in ("gguf", "onnx"):
        with pytest.raises(UserError, match="GPT2LMHeadModel"):
            check_supported(ckpt, fmt)


def test_multimodal_gemma3_onnx_is_refused_with_the_reason(tmp_path):
    import json

    from distillm_edge.export.checkpoint import Checkpoint, check_supported

    config = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="text-only Gemma-3 \\(Gemma3ForCausalLM") as info:
        check_supported(Checkpoint(tmp_path, config, {}), "onnx")
    assert "Gemma3ForConditionalGeneration" in str(info.value) and "convert_hf_to_gguf.py" in str(info.value)
