"""The pure array helpers of the GGUF writer, each against a naive loop reference.

Run: ``pytest tests/export/test_tensors.py``.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from distillm_edge.export.tensors import (
    dequantize_q8_0,
    from_bf16,
    llama3_rope_factors,
    permute_qk,
    quantize_q8_0,
    to_bf16,
    unpermute_qk,
)


def naive_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Row by row: in each head, first-half row i goes to 2i, second-half row i to 2i+1."""
    d = w.shape[0] // n_heads
    out = np.empty_like(w)
    for h in range(n_heads):
        for i in range(d // 2):
            out[h * d + 2 * i] = w[h * d + i]
            out[h * d + 2 * i + 1] = w[h * d + d // 2 + i]
    return out


@pytest.mark.parametrize("n_heads,head_dim,cols", [(9, 64, 576), (3, 64, 576), (4, 16, 64), (1, 2, 3)])
def test_permute_qk_matches_naive_and_inverts(n_heads, head_dim, cols):
    w = np.random.default_rng(0).standard_normal((n_heads * head_dim, cols)).astype(np.float32)
    p = permute_qk(w, n_heads)
    np.testing.assert_array_equal(p, naive_permute(w, n_heads))
    np.testing.assert_array_equal(unpermute_qk(p, n_heads), w)
    bias = w[:, 0].copy()  # 1-D biases are permuted the same way
    np.testing.assert_array_equal(permute_qk(bias, n_heads), naive_permute(bias[:, None], n_heads)[:, 0])


def test_permute_preserves_rotary_attention_scores():
    """HF rotate_half RoPE on original rows == interleaved RoPE on permuted rows (the reason for the permutation)."""
    rng = np.random.default_rng(1)
    d, pos = 8, 5
    q, k = rng.standard_normal(d), rng.standard_normal(d)
    theta = pos / (10000 ** (np.arange(0, d, 2) / d))
    cos, sin = np.cos(theta), np.sin(theta)

    def hf_rope(x):  # pairs (i, i + d/2)
        a, b = x[: d // 2], x[d // 2 :]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin])

    def interleaved_rope(x):  # pairs (2i, 2i+1)
        a, b = x[0::2], x[1::2]
        out = np.empty_like(x)
        out[0::2], out[1::2] = a * cos - b * sin, b * cos + a * sin
        return out

    qp, kp = permute_qk(q[:, None], 1)[:, 0], permute_qk(k[:, None], 1)[:, 0]
    assert math.isclose(hf_rope(q) @ hf_rope(k), interleaved_rope(qp) @ interleaved_rope(kp), rel_tol=1e-12)


def test_permute_rejects_odd_heads():
    with pytest.raises(ValueError, match="heads"):
        permute_qk(np.zeros((10, 4)), 4)


def test_llama3_rope_factors_match_transformers():
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    cfg = LlamaConfig(hidden_size=2048, num_attention_heads=32, head_dim=64, rope_parameters=rope)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, torch.device("cpu"))
    base = 1.0 / (500000.0 ** (np.arange(0, 64, 2) / 64))
    factors = llama3_rope_factors(64, 500000.0, 32.0, 1.0, 4.0, 8192)
    assert factors.dtype == np.float32 and factors.shape == (32,)
    np.testing.assert_allclose(base / factors, scaled.numpy(), rtol=1e-5)
    assert factors[0] == 1.0 and factors[-1] == 32.0  # high frequencies untouched, lowest fully scaled


def naive_bf16(x: float) -> int:
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    if (bits & 0x7FFFFFFF) > 0x7F800000:
        return (bits >> 16) | 0x40
    lower, upper = bits & 0xFFFF, bits >> 16
    if lower > 0x8000 or (lower == 0x8000 and upper & 1):
        upper += 1
    return upper & 0xFFFF


def test_bf16_matches_naive_rounding_and_torch():
    import torch

    rng = np.random.default_rng(2)
    edge = [0.0, -0.0, 1.0, -1.5, 3.4e38, -3.4e38, np.inf, -np.inf, 1e-40, -1e-45, 1.00390625, 1.01171875]
    x = np.concatenate([rng.standard_normal(2000) * 10.0 ** rng.integers(-30, 30, 2000), edge])
    x = x.astype(np.float32)
    got = to_bf16(x)
    assert got.tolist() == [naive_bf16(float(v)) for v in x]
    np.testing.assert_array_equal(from_bf16(got), torch.from_numpy(x).to(torch.bfloat16).float().numpy())
    nan = to_bf16(np.array([np.nan], dtype=np.float32))
    assert np.isnan(from_bf16(nan)[0])


def round_half_away_py(v: float) -> int:
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def naive_q8_0(row: np.ndarray) -> bytes:
    out = b""
    for start in range(0, len(row), 32):
        block = row[start : start + 32].astype(np.float32)
        d = np.float32(max(abs(float(v)) for v in block)) / np.float32(127)
        inv = np.float32(1) / d if d else np.float32(0)
        out += np.float16(d).tobytes()
        out += bytes(np.int8(round_half_away_py(float(np.float32(v) * inv))).view(np.uint8) for v in block)
    return out


def test_q8_0_matches_naive_reference_and_gguf():
    import gguf

    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 96)).astype(np.float32)
    x[1] = 0.0  # all-zero blocks: scale 0, no division by zero
    x[2, :32] = np.arange(32) - 15.5  # halves to round away from zero
    got = quantize_q8_0(x)
    assert got.shape == (6, 3 * 34) and got.dtype == np.uint8
    for r in range(6):
        assert got[r].tobytes() == naive_q8_0(x[r])
    np.testing.assert_array_equal(got, gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0))


def test_q8_0_round_trip_error_is_within_half_a_step():
    x = np.random.default_rng(4).standard_normal((4, 64)).astype(np.float32) * 3
    back = dequantize_q8_0(quantize_q8_0(x))
    step = np.abs(x).reshape(-1, 32).max(axis=1) / 127
    err = np.abs(back - x).reshape(-1, 32).max(axis=1)
    assert np.all(err <= step * 0.5 + np.abs(x).reshape(-1, 32).max(axis=1) * 1e-3)  # + float16 scale rounding
    np.testing.assert_array_equal(dequantize_q8_0(quantize_q8_0(np.zeros((1, 32)))), np.zeros((1, 32)))


def test_q8_0_rejects_partial_blocks():
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_q8_0(np.zeros((2, 48)))
