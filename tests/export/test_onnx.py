"""ONNX exports through ONNX Runtime GenAI's model builder: fp32 parity and int4 generation.

Fast tests export the tiny Llama (each build takes a few seconds on a quiet machine); the slow one
exports the real SmolLM2-135M to int4. Run: ``pytest tests/export/test_onnx.py``.
"""

from __future__ import annotations

import json

import pytest


def test_fp32_export_is_verified_with_the_tokenizer_beside_it(tmp_path, tiny_llama_dir, small_parity):
    from distillm_edge.export import ExportConfig, run

    result = run(ExportConfig(model=str(tiny_llama_dir), format="onnx", quant="fp32", outdir=tmp_path, threads=2))
    assert result.artifact == tmp_path / f"{tiny_llama_dir.name}-onnx-fp32"
    assert [p.name for p in tmp_path.iterdir()] == [result.artifact.name]  # no temporary directory left behind
    names = {p.name for p in result.artifact.iterdir()}
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "manifest.json"} <= names
    manifest = json.loads((result.artifact / "manifest.json").read_text())
    assert manifest["verified"] is True and manifest["criterion"] == "close"
    assert manifest["parity"]["top1_agreement"] >= 0.97 and manifest["parity"]["tokenizer_match"]
    assert manifest["parity"]["mean_kl"] < 1e-6
    assert manifest["export"]["tool"] == "onnxruntime_genai.models.builder"
    assert "model.onnx.data" in manifest["files"] and 28 < manifest["bits_per_weight"] < 40


def test_int4_export_generates(tmp_path, tiny_llama_dir, small_parity):
    from distillm_edge.backends.onnx_backend import OnnxBackend
    from distillm_edge.export import ExportConfig, run

    result = run(ExportConfig(model=str(tiny_llama_dir), format="onnx", quant="int4", outdir=tmp_path, threads=2))
    manifest = result.manifest
    assert manifest["criterion"] == "lossy" and manifest["parity"]["ppl_increase"] < 0.25 and result.verified
    assert manifest["bits_per_weight"] < 10  # a 2-layer model is mostly 8-bit (embedding/head, sensitive layers)
    backend = OnnxBackend(str(result.artifact), threads=2)
    try:
        assert backend.info.dtype == "int4"
        tokens = list(backend.stream(backend.chat_ids([{"role": "user", "content": "Define tachycardia."}]), 8))
    finally:
        backend.close()
    assert 1 <= len(tokens) <= 8 and all(0 <= t < backend.vocab_size for t in tokens)


@pytest.mark.slow
def test_smollm2_int4_export_generates_and_reports_perplexity(tmp_path, smollm2_dir, small_parity):
    from distillm_edge.backends.onnx_backend import OnnxBackend
    from distillm_edge.export import ExportConfig, run
    from distillm_edge.export.onnx_convert import ONNX_TYPES

    result = run(ExportConfig(model="smollm2-135m-instruct", format="onnx", quant="int4", outdir=tmp_path, threads=2))
    p = result.manifest["parity"]
    assert p["tokenizer_match"] and p["ppl_source"] < p["ppl_artifact"] and p["top1_agreement"] > 0.5
    # the builder's default int4 (tied embedding + head in 4-bit RTN) gave +38.5% here and fails the bound;
    # k-quant with the head and sensitive layers in 8-bit measured +15.6%
    assert result.verified and p["ppl_increase"] < 0.25 and result.manifest["bits_per_weight"] < 8
    assert result.manifest["export"]["extra_options"] == list(ONNX_TYPES["int4"].extra_options)
    backend = OnnxBackend(str(result.artifact), threads=2)
    try:
        ids = backend.chat_ids([{"role": "user", "content": "What is the normal range of blood pressure?"}])
        text = backend.detokenize(list(backend.stream(ids, 16)))
    finally:
        backend.close()
    assert len(text.split()) >= 3
