"""Roofline pieces: the bound and share, bytes per token for torch and ONNX, the bandwidth cache.

Run: ``pytest tests/bench/test_bench_roofline.py``.
"""

from __future__ import annotations

import math

import pytest

from distillm_edge.bench import roofline as rl


def test_roofline_bound_and_share():
    out = rl.roofline(decode_tps=50.0, bytes_per_token=100_000_000, bandwidth_gbps=10.0)
    assert out["bound_tps"] == pytest.approx(100.0)
    assert out["share"] == pytest.approx(0.5)
    assert math.isnan(rl.roofline(50.0, 0, 10.0)["share"])


def test_torch_parameter_bytes_counts_tied_weights_once(tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    naive = {}
    for tensor in model.state_dict().values():
        naive[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    assert rl.torch_parameter_bytes(model) == sum(naive.values())  # llama's state dict holds no buffers
    assert rl.torch_parameter_bytes(model.to(torch.bfloat16)) == rl.torch_parameter_bytes(model.float()) // 2


def test_onnx_initializer_bytes_from_shapes_without_loading_data(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 8), dtype=np.float32), "w")  # 128 bytes
    packed = numpy_helper.from_array(np.ones((3, 16), dtype=np.uint8), "packed")  # 48 bytes
    nibbles = helper.make_tensor("nibbles", TensorProto.INT4, [5, 3], [1] * 15)  # 15 int4 -> 8 bytes
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        initializer=[w, packed, nibbles],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=0)
    assert rl.onnx_initializer_bytes(path) == 128 + 48 + 8
    assert rl.onnx_initializer_bytes(tmp_path) == 128 + 48 + 8
    assert rl.path_bytes(path) == path.stat().st_size + (tmp_path / "model.onnx.data").stat().st_size


def test_bandwidth_is_measured_once_then_cached(tmp_path, monkeypatch):
    small = rl.measure_bandwidth(threads=2, nbytes=8 * 2**20, repeats=2)
    assert small["read_gbps"] > 0 and small["copy_gbps"] > 0
    assert small["bound_gbps"] == max(small["read_gbps"], small["copy_gbps"])
    calls = []
    monkeypatch.setattr(rl, "measure_bandwidth", lambda threads: calls.append(threads) or {**small, "threads": threads})
    cache = tmp_path / "bw.json"
    first = rl.cached_bandwidth(2, "box", cache)
    second = rl.cached_bandwidth(2, "box", cache)
    other = rl.cached_bandwidth(1, "box", cache)
    assert calls == [2, 1]
    assert not first["from_cache"] and second["from_cache"] and second["cache"] == str(cache)
    assert second["bound_gbps"] == first["bound_gbps"] and other["threads"] == 1


def _gguf(path, tied: bool, vocab=50, hidden=32):
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.ones((vocab, hidden), dtype=np.float16))
    writer.add_tensor("blk.0.attn_q.weight", np.ones((hidden, hidden), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    if not tied:
        writer.add_tensor("output.weight", np.ones((vocab, hidden), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_bytes_per_token_against_a_naive_count(tmp_path):
    vocab, hidden = 50, 32
    body = hidden * hidden * 4 + hidden * 4
    tied = _gguf(tmp_path / "tied.gguf", True)
    assert rl.gguf_bytes_per_token(tied) == vocab * hidden * 2 + body  # the embedding is the LM head: read whole
    untied = _gguf(tmp_path / "untied.gguf", False)
    assert rl.gguf_bytes_per_token(untied) == hidden * 2 + body + vocab * hidden * 4  # one embedding row
    assert rl.gguf_bytes_per_token(untied) < untied.stat().st_size  # not the file size (metadata, alignment)


def test_torch_untied_embedding_counts_one_row():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    naive = sum(p.numel() * 4 for p in model.parameters())
    assert rl.torch_parameter_bytes(model) == naive
    assert rl.torch_parameter_bytes(model, per_token=True) == naive - 100 * 16 * 4 + 16 * 4


def test_onnx_gather_only_initializer_counts_one_row(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.ones((10, 4), dtype=np.float32), "embed")  # 160 bytes, 16 per row
    w = numpy_helper.from_array(np.ones((4, 10), dtype=np.float32), "head")  # 160 bytes
    graph = helper.make_graph(
        [helper.make_node("Gather", ["embed", "ids"], ["h"]), helper.make_node("MatMul", ["h", "head"], ["y"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=[table, w])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert rl.onnx_initializer_bytes(path) == 320
    assert rl.onnx_initializer_bytes(path, per_token=True) == 16 + 160
