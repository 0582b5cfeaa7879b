"""GGUF exports run by llama.cpp (llama-cpp-python, through the shared ``LlamaCppBackend``):
tokenizer parity with Hugging Face, f16 / q8_0 logit parity, a Q4_K_M export that loads and
generates (with its fallback report), and the end-to-end command with its parity check.

Fast tests use the tiny random Llama; the ``slow`` ones export the real SmolLM2-135M.
Run: ``pytest tests/export/test_gguf_llamacpp.py`` (``-m "not slow"`` for the fast half).
"""

from __future__ import annotations

import json

import numpy as np
import pytest


def _backend(path, n_ctx=512):
    from distillm_edge.backends.llamacpp_backend import LlamaCppBackend

    return LlamaCppBackend(str(path), threads=2, n_ctx=n_ctx)


def _tokenizer_parity(backend, tokenizer, sample, chat):
    for line in sample.splitlines(keepends=True) + [sample]:
        assert backend.tokenize(line) == tokenizer(line).input_ids, repr(line)
    for end in range(1, len(chat) + 1):
        assert backend.chat_ids(chat[:end]) == tokenizer.apply_chat_template(chat[:end], add_generation_prompt=True,
                                                                             tokenize=True, return_dict=False)
    ids = tokenizer(sample).input_ids
    assert backend.detokenize(ids) == tokenizer.decode(ids, skip_special_tokens=True)


def test_llamacpp_tokenizes_like_hugging_face(tiny_gguf, smollm2_tokenizer, tokenizer_sample, chat_sample):
    backend = _backend(tiny_gguf("f32"))
    try:
        _tokenizer_parity(backend, smollm2_tokenizer, tokenizer_sample, chat_sample)
    finally:
        backend.close()


def _torch_logprobs(model_dir, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0], -1).numpy()


@pytest.mark.parametrize("outtype,max_dlogp", [("f32", 1e-3), ("f16", 2e-2), ("q8_0", 6e-2)])
def test_logit_parity_through_llamacpp(tiny_gguf, tiny_llama_dir, smollm2_tokenizer, chat_sample, outtype, max_dlogp):
    from distillm_edge.export.parity import kl_rows

    ids = smollm2_tokenizer.apply_chat_template(chat_sample, add_generation_prompt=True, tokenize=True, return_dict=False)
    reference = _torch_logprobs(tiny_llama_dir, ids)
    backend = _backend(tiny_gguf(outtype))
    try:
        got = backend.next_token_logprobs(ids)
    finally:
        backend.close()
    assert got.shape == reference.shape
    assert np.abs(got - reference).max() < max_dlogp
    assert kl_rows(reference, got).mean() < max_dlogp**2


def test_our_q8_0_is_byte_identical_to_llamacpp_quantizer(tmp_path, tiny_gguf):
    import llama_cpp
    from gguf import GGUFReader

    from distillm_edge.export.gguf_quantize import captured_llama_log

    theirs = tmp_path / "llamacpp-q8_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, 2
    with captured_llama_log():
        assert llama_cpp.llama_model_quantize(str(tiny_gguf("f32")).encode(), str(theirs).encode(), params) == 0
    ours = {t.name: t for t in GGUFReader(tiny_gguf("q8_0")).tensors}
    compared = 0
    for t in GGUFReader(theirs).tensors:
        if t.tensor_type.name == "Q8_0":
            assert ours[t.name].tensor_type.name == "Q8_0"
            np.testing.assert_array_equal(np.asarray(ours[t.name].data), np.asarray(t.data), err_msg=t.name)
            compared += 1
    assert compared >= 14  # every 2-D weight


@pytest.mark.parametrize("arch", ["llama3-rope", "mistral"])
def test_other_supported_variants_match_torch(tmp_path, smollm2_tokenizer, chat_sample, arch):
    """Llama-3 RoPE scaling (rope_freqs), an untied head, and Mistral's checkpoint layout, run by llama.cpp."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    from distillm_edge.export.checkpoint import open_checkpoint
    from distillm_edge.export.gguf_convert import write_gguf

    torch.manual_seed(0)
    common = dict(vocab_size=len(smollm2_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)
    if arch == "mistral":
        model = MistralForCausalLM(MistralConfig(**common, sliding_window=4096))
    else:
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        model = LlamaForCausalLM(LlamaConfig(**common, rope_parameters=rope))
    src = tmp_path / arch
    model.save_pretrained(src)
    smollm2_tokenizer.save_pretrained(src)
    out = tmp_path / f"{arch}.gguf"
    write_gguf(open_checkpoint(src), smollm2_tokenizer, out, "f32", arch)
    ids = smollm2_tokenizer.apply_chat_template(chat_sample, add_generation_prompt=True, tokenize=True, return_dict=False)
    reference = _torch_logprobs(src, ids)
    backend = _backend(out)
    try:
        got = backend.next_token_logprobs(ids)
    finally:
        backend.close()
    assert np.abs(got - reference).max() < 1e-3


def test_q4_k_m_loads_generates_and_reports_fallbacks(tmp_path, tiny_gguf, smollm2_tokenizer, chat_sample):
    from distillm_edge.export import gguf_quantize

    out = tmp_path / "tiny-q4_k_m.gguf"
    fallbacks = gguf_quantize.quantize(tiny_gguf("f32"), out, "q4_k_m", threads=2).fallbacks
    types = gguf_quantize.tensor_types(out)
    # the tiny model is 64/128 wide: no row fills a 256-value super-block, so every k-quant fell back
    assert fallbacks and all(f["row"] % 256 for f in fallbacks.values())
    assert {f["wanted"] for f in fallbacks.values()} <= {"Q4_K", "Q6_K"}
    assert all(types[name] == f["used"] for name, f in fallbacks.items())
    assert "Q4_K" not in types.values() and types["blk.0.attn_norm.weight"] == "F32"
    backend = _backend(out)
    try:
        ids = backend.chat_ids(chat_sample[:2])
        tokens = list(backend.stream(ids, 8))
    finally:
        backend.close()
    assert 1 <= len(tokens) <= 8 and all(0 <= t < len(smollm2_tokenizer) for t in tokens)


def test_export_command_verifies_and_fails_loudly(tmp_path, tiny_llama_dir, small_parity, monkeypatch):
    from typer.testing import CliRunner

    from distillm_edge.cli import app
    from distillm_edge.export import parity

    runner = CliRunner()
    args = ["export", "--model", str(tiny_llama_dir), "--format", "gguf", "--quant", "q8_0", "--outdir", str(tmp_path),
            "--threads", "2"]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    manifest = json.loads((tmp_path / f"{tiny_llama_dir.name}-q8_0.manifest.json").read_text())
    assert manifest["verified"] is True and manifest["criterion"] == "close"
    p = manifest["parity"]
    assert p["top1_agreement"] >= 0.97 and p["tokenizer_match"] and p["greedy_prompts"] == 2 and p["max_new_tokens"] == 12

    monkeypatch.setattr(parity, "judge", lambda *a: ["top-1 agreement 12.00% < 97%"])
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1
    manifest = json.loads((tmp_path / f"{tiny_llama_dir.name}-q8_0.manifest.json").read_text())
    assert manifest["verified"] is False and manifest["failures"] == ["top-1 agreement 12.00% < 97%"]


def test_cli_errors_and_list_quants(tmp_path, tiny_llama_dir):
    from typer.testing import CliRunner

    from distillm_edge.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["export", "--model", str(tmp_path / "nope"), "--format", "gguf"])
    assert missing.exit_code == 2 and "not found" in missing.output
    table = runner.invoke(app, ["export", "--model", str(tiny_llama_dir), "--list-quants"])
    assert table.exit_code == 0 and "q4_k_m" in table.output and "int4" in table.output and "MiB" in table.output


@pytest.mark.slow
def test_smollm2_gguf_f16_tokenizer_and_logit_parity(tmp_path, smollm2_dir, smollm2_tokenizer, small_parity,
                                                     tokenizer_sample, chat_sample):
    from distillm_edge.export import ExportConfig, run

    result = run(ExportConfig(model="smollm2-135m-instruct", format="gguf", quant="f16", outdir=tmp_path, threads=2))
    assert result.verified, result.failures
    p = result.manifest["parity"]
    assert p["top1_agreement"] >= 0.99 and p["greedy_identical"] + p["greedy_tie_parted"] == p["greedy_prompts"]
    backend = _backend(result.artifact)
    try:
        _tokenizer_parity(backend, smollm2_tokenizer, tokenizer_sample, chat_sample)
    finally:
        backend.close()


@pytest.mark.slow
def test_smollm2_q4_k_m_falls_back_on_576_wide_rows(tmp_path, smollm2_dir, small_parity):
    from distillm_edge.export import ExportConfig, run

    result = run(ExportConfig(model="smollm2-135m-instruct", format="gguf", quant="q4_k_m", outdir=tmp_path, threads=2))
    export = result.manifest["export"]
    fallbacks = export["fallbacks"]
    assert fallbacks["blk.0.attn_q.weight"] == {"row": 576, "wanted": "Q4_K", "used": "Q5_0", "unusual_shape": False}
    assert "blk.0.ffn_down.weight" not in fallbacks  # 1536 = 6 x 256 keeps its k-quant
    assert export["tensor_types"].get("Q4_K", 0) + export["tensor_types"].get("Q6_K", 0) >= 30
    assert result.verified, result.failures  # perplexity within the default +25%
