"""llama.cpp quantizer log parsing: every fallback shape llama.cpp's ``tensor_type_fallback`` logs,
including "must use F16 due to unusual shape" (rows not a multiple of 32), checked on the exact log
lines and on a real quantization of a 48-wide model whose rows fit no quantized block.

Run: ``pytest tests/export/test_quantize_log.py``.
"""

from __future__ import annotations

from distillm_edge.export.gguf_quantize import parse_fallbacks, parse_missing_imatrix

# the exact lines llama.cpp's src/llama-quant.cpp prints (format "%-36s - ncols %6d not divisible by %3d
# (required for type %7s) " + optional "(WARNING: must use F16 due to unusual shape) " + "-> falling back to %7s\n")
K_QUANT = ("warning: blk.0.attn_q.weight                  - ncols    576 not divisible by 256 "
           "(required for type    q4_K) -> falling back to    q5_0\n")
UNUSUAL = ("warning: blk.0.attn_k.weight                  - ncols     48 not divisible by 256 "
           "(required for type    q4_K) (WARNING: must use F16 due to unusual shape) -> falling back to     f16\n")
BLOCK_32 = ("warning: blk.1.ffn_up.weight                   - ncols     48 not divisible by  32 "
            "(required for type    q8_0) (WARNING: must use F16 due to unusual shape) -> falling back to     f16\n")


def test_k_quant_fallback_line():
    assert parse_fallbacks(K_QUANT) == {
        "blk.0.attn_q.weight": {"row": 576, "wanted": "Q4_K", "used": "Q5_0", "unusual_shape": False}}


def test_unusual_shape_f16_fallback_lines():
    got = parse_fallbacks("llama_model_quantize_impl: ...\n" + UNUSUAL + BLOCK_32 + K_QUANT)
    assert got["blk.0.attn_k.weight"] == {"row": 48, "wanted": "Q4_K", "used": "F16", "unusual_shape": True}
    assert got["blk.1.ffn_up.weight"] == {"row": 48, "wanted": "Q8_0", "used": "F16", "unusual_shape": True}
    assert len(got) == 3


def test_line_split_across_log_callbacks():
    # llama.cpp logs the warning in up to three calls; the captured pieces are joined before parsing
    pieces = [UNUSUAL[:98], UNUSUAL[98:146], UNUSUAL[146:]]
    assert parse_fallbacks("".join(pieces))["blk.0.attn_k.weight"]["used"] == "F16"


def test_missing_imatrix_lines():
    log = ("\n====== llama_model_quantize_impl: did not find weights for token_embd.weight\n"
           "\n====== llama_model_quantize_impl: did not find weights for blk.3.ffn_down.weight\n")
    assert parse_missing_imatrix(log) == ["blk.3.ffn_down.weight", "token_embd.weight"]


def test_real_quantizer_reports_the_f16_fallback(tmp_path, smollm2_tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from distillm_edge.export import gguf_quantize
    from distillm_edge.export.checkpoint import open_checkpoint
    from distillm_edge.export.gguf_convert import write_gguf

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(smollm2_tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)
    src = tmp_path / "w48"
    LlamaForCausalLM(cfg).save_pretrained(src)
    smollm2_tokenizer.save_pretrained(src)
    f32 = tmp_path / "w48-f32.gguf"
    write_gguf(open_checkpoint(src), smollm2_tokenizer, f32, "f32", "w48")
    out = tmp_path / "w48-q4_k_m.gguf"
    fallbacks = gguf_quantize.quantize(f32, out, "q4_k_m", threads=2).fallbacks
    types = gguf_quantize.tensor_types(out)
    unusual = {name for name, f in fallbacks.items() if f["unusual_shape"]}
    assert "blk.0.attn_q.weight" in unusual  # 48 columns: neither 256 nor 32 divides them
    assert all(types[name] == fallbacks[name]["used"] == "F16" for name in unusual)
    assert all(types[name] == f["used"] for name, f in fallbacks.items())
