"""Write a Llama-family Hugging Face checkpoint as a GGUF file (f32, f16, bf16 or q8_0) for llama.cpp.

The file holds (1) the architecture metadata llama.cpp's ``llama`` graph reads: context length,
widths, layer and head counts, RoPE base and scaling, RMSNorm epsilon, vocab size; (2) the
tokenizer (``gguf_vocab.py``; its pre-tokenizer kind checked by llama.cpp itself); (3) the tensors under llama.cpp's names, q/k rows permuted to its
interleaved RoPE layout (``tensors.permute_qk``), 1-D norms kept in f32, 2-D weights in the
requested type. A tied LM head is not written: llama.cpp reuses ``token_embd`` when ``output`` is
absent. Llama-3 RoPE scaling becomes the ``rope_freqs`` tensor.

Tensors are streamed: all tensor infos are declared first, then each tensor is read, converted and
appended, so memory stays at about one tensor. The caller passes a temporary path (atomic writes
live in ``run.py``).

Run: ``distillm-edge export --model smollm2-135m-instruct --format gguf --quant f16``.
Test: ``pytest tests/export/test_gguf.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillm_edge.errors import UserError
from distillm_edge.export.checkpoint import SUPPORTED_ARCHITECTURES, Checkpoint
from distillm_edge.export.gguf_vocab import GGUFVocab, add_vocab, settle_pre_tokenizer, vocab_from_tokenizer
from distillm_edge.export.tensors import llama3_rope_factors, permute_qk, quantize_q8_0, to_bf16

DIRECT_TYPES = ("f32", "f16", "bf16", "q8_0")

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.bias": "attn_output.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}


def gguf_name(hf_name: str) -> str | None:
    """llama.cpp's tensor name for a Hugging Face Llama weight (None for buffers we skip)."""
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    m = _LAYER.match(hf_name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"blk.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"
    raise UserError(f"weight '{hf_name}' has no llama.cpp counterpart; this checkpoint is not a plain Llama model.")


@dataclass(frozen=True)
class Encoded:
    """How one tensor is stored: GGML type name, byte shape for raw types, and the encoder."""
    ggml_type: str
    encode: Callable[[np.ndarray], np.ndarray]


def encoding(outtype: str, shape: tuple[int, ...]) -> Encoded:
    """The storage of a tensor of ``shape`` in a file of type ``outtype`` (1-D tensors stay f32)."""
    if len(shape) == 1 or outtype == "f32":
        return Encoded("F32", lambda a: a.astype(np.float32))
    if outtype == "f16":
        return Encoded("F16", lambda a: a.astype(np.float16))
    if outtype == "bf16":
        return Encoded("BF16", lambda a: to_bf16(a).view(np.uint8))
    if outtype == "q8_0":
        if shape[-1] % 32:  # rows that do not fill whole blocks: keep f16, as llama.cpp's converter does
            return Encoded("F16", lambda a: a.astype(np.float16))
        return Encoded("Q8_0", quantize_q8_0)
    raise UserError(f"GGUF type '{outtype}' is not written directly; use one of {', '.join(DIRECT_TYPES)}.")


def _file_type(outtype: str) -> int:
    from gguf import LlamaFileType

    return {"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16, "bf16": LlamaFileType.MOSTLY_BF16,
            "q8_0": LlamaFileType.MOSTLY_Q8_0}[outtype]


def _add_metadata(writer, ckpt: Checkpoint, outtype: str, name: str) -> None:
    cfg = ckpt.config
    writer.add_name(name)
    writer.add_context_length(int(cfg.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    writer.add_head_count(int(cfg["num_attention_heads"]))
    writer.add_head_count_kv(int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(int(cfg["vocab_size"]))
    writer.add_rope_dimension_count(ckpt.head_dim)
    if cfg.get("head_dim") is not None:  # as llama.cpp's convert_hf_to_gguf.py: whenever the config names it
        writer.add_key_length(ckpt.head_dim)
        writer.add_value_length(ckpt.head_dim)
    rope = ckpt.rope()
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    if rope["rope_type"] == "linear":
        from gguf import RopeScalingType

        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_file_type(_file_type(outtype))
    if outtype == "q8_0":
        writer.add_quantization_version(2)


def rope_freqs(ckpt: Checkpoint) -> np.ndarray | None:
    """The ``rope_freqs`` tensor for Llama-3 RoPE scaling (None for other RoPE types)."""
    rope = ckpt.rope()
    if rope["rope_type"] != "llama3":
        return None
    return llama3_rope_factors(
        ckpt.head_dim, float(rope.get("rope_theta", 10000.0)), float(rope["factor"]),
        float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0)),
        int(rope.get("original_max_position_embeddings", 8192)),
    )


def _write_stub(ckpt: Checkpoint, path: Path, vocab: GGUFVocab) -> None:
    """A GGUF with metadata and vocabulary but no tensors (llama.cpp loads it vocab-only)."""
    import gguf

    writer = gguf.GGUFWriter(path, SUPPORTED_ARCHITECTURES[ckpt.architecture])
    _add_metadata(writer, ckpt, "f32", "vocab-check")
    add_vocab(writer, vocab)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()


def vocab_for(ckpt: Checkpoint, tokenizer, workdir: Path) -> GGUFVocab:
    """The GGUF vocabulary of ``tokenizer``, with a pre-tokenizer kind llama.cpp was seen to reproduce."""
    vocab = vocab_from_tokenizer(tokenizer, int(ckpt.config["vocab_size"]))
    return settle_pre_tokenizer(vocab, tokenizer, lambda path, v: _write_stub(ckpt, path, v), workdir)


def _transform(ckpt: Checkpoint, gname: str) -> Callable[[np.ndarray], np.ndarray]:
    cfg = ckpt.config
    if gname.endswith(("attn_q.weight", "attn_q.bias")):
        return lambda a: permute_qk(a, int(cfg["num_attention_heads"]))
    if gname.endswith(("attn_k.weight", "attn_k.bias")):
        return lambda a: permute_qk(a, int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]))
    return lambda a: a


def write_gguf(ckpt: Checkpoint, tokenizer, out: Path, outtype: str, name: str, progress=None) -> dict[str, str]:
    """Write ``ckpt`` to ``out`` as a GGUF of ``outtype``; returns {gguf tensor name: GGML type}.

    ``progress(done, total)`` is called after each tensor when given.
    """
    import gguf

    if outtype not in DIRECT_TYPES:
        raise UserError(f"GGUF type '{outtype}' is not written directly; use one of {', '.join(DIRECT_TYPES)}.")
    arch = SUPPORTED_ARCHITECTURES[ckpt.architecture]
    vocab = vocab_for(ckpt, tokenizer, Path(out).parent)
    tied = bool(ckpt.config.get("tie_word_embeddings", False))

    plan: list[tuple[str, str, Encoded]] = []  # (hf name, gguf name, encoding)
    shapes = ckpt.shapes()
    for hf_name, shape in shapes.items():
        gname = gguf_name(hf_name)
        if gname is None or (tied and gname == "output.weight"):
            continue
        plan.append((hf_name, gname, encoding(outtype, shape)))
    planned = {hf for hf, _, _ in plan}
    freqs = rope_freqs(ckpt)

    writer = gguf.GGUFWriter(out, arch)
    _add_metadata(writer, ckpt, outtype, name)
    add_vocab(writer, vocab)
    if freqs is not None:
        writer.add_tensor_info("rope_freqs.weight", freqs.shape, freqs.dtype, freqs.nbytes)
    for hf_name, gname, enc in plan:
        rows_cols = shapes[hf_name]
        qtype = gguf.GGMLQuantizationType[enc.ggml_type]
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        nbytes = int(np.prod(rows_cols)) // block * type_size
        if enc.ggml_type in ("F32", "F16"):
            writer.add_tensor_info(gname, rows_cols, np.dtype(enc.ggml_type.replace("F", "float")), nbytes)
        else:  # raw types are declared by their byte shape
            byte_shape = (*rows_cols[:-1], rows_cols[-1] // block * type_size)
            writer.add_tensor_info(gname, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()

    types = {}
    if freqs is not None:
        writer.write_tensor_data(freqs)
        types["rope_freqs.weight"] = "F32"
    # ``tensors()`` yields in the same order as ``shapes()``, and the writer expects the declared order
    pending = iter(plan)
    for hf_name, array in ckpt.tensors():
        if hf_name not in planned:
            continue
        expected, gname, enc = next(pending)
        assert expected == hf_name, (expected, hf_name)
        writer.write_tensor_data(enc.encode(_transform(ckpt, gname)(array)))
        types[gname] = enc.ggml_type
        if progress is not None:
            progress(len(types), len(plan))
    writer.close()
    return types
