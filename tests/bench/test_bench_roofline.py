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
