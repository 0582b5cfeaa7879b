"""Pure array functions behind the GGUF writer: Q/K row order, Llama-3 RoPE factors, BF16, Q8_0.

- ``permute_qk`` / ``unpermute_qk``: Hugging Face Llama checkpoints rotate each head's query/key
  features in two halves (``rotate_half``: feature i pairs with i + d/2); llama.cpp's Llama graph
  rotates adjacent pairs (2i, 2i+1). Converting a q/k projection therefore reorders the rows of
  every head so that the first-half row i lands at 2i and the second-half row i at 2i+1. The
  attention scores are unchanged because q and k are permuted the same way.
- ``llama3_rope_factors``: Llama-3.1-style RoPE scaling leaves high-frequency dimensions alone,
  divides low-frequency ones by ``factor`` and blends in between; llama.cpp reads the per-dimension
  divisors from a ``rope_freqs`` tensor.
- ``to_bf16`` (round to nearest even, NaN kept quiet) and ``quantize_q8_0`` / ``dequantize_q8_0``
  (blocks of 32 weights: one float16 scale ``max|x|/127`` then 32 int8 values rounded half away
  from zero), both byte-exact with ggml's reference code and vectorized over whole tensors.

Test: ``pytest tests/export/test_tensors.py`` (each one against a naive loop reference).
"""

from __future__ import annotations

import math

import numpy as np

Q8_0_BLOCK = 32
Q8_0_BYTES = 2 + Q8_0_BLOCK  # float16 scale + 32 int8


def permute_qk(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the rows of a q/k projection (or bias) from HF's half-split to llama.cpp's interleaved RoPE."""
    rows = weight.shape[0]
    if rows % (2 * n_heads):
        raise ValueError(f"{rows} rows cannot be split into {n_heads} heads of even size")
    half = rows // n_heads // 2
    return weight.reshape(n_heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def unpermute_qk(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of :func:`permute_qk` (llama.cpp row order back to Hugging Face's)."""
    rows = weight.shape[0]
    half = rows // n_heads // 2
    return weight.reshape(n_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def llama3_rope_factors(head_dim: int, theta: float, factor: float, low_freq_factor: float,
                        high_freq_factor: float, original_context: int) -> np.ndarray:
    """Per-frequency divisors (float32, length head_dim/2) of Llama-3 RoPE scaling."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    wavelen = 2 * math.pi / inv_freq
    low_wavelen = original_context / low_freq_factor  # longer than this: fully scaled
    high_wavelen = original_context / high_freq_factor  # shorter than this: untouched
    smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = 1.0 / ((1.0 - smooth) / factor + smooth)
    out = np.where(wavelen < high_wavelen, 1.0, np.where(wavelen > low_wavelen, factor, blended))
    return out.astype(np.float32)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """C's roundf: halves go away from zero (numpy's round goes to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bit patterns (uint16), rounding to nearest even; NaNs stay NaN."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
    quiet_nan = (bits >> 16) | 0x40
    return np.where(is_nan, quiet_nan, rounded).astype(np.uint16)


def from_bf16(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """Quantize float rows (last dim a multiple of 32) to Q8_0 bytes, shape [..., cols/32*34]."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1] % Q8_0_BLOCK:
        raise ValueError(f"Q8_0 needs rows of a multiple of {Q8_0_BLOCK} values, got {x.shape[-1]}")
    blocks = x.reshape(-1, Q8_0_BLOCK)
    scale = np.abs(blocks).max(axis=1, keepdims=True) / 127
    with np.errstate(divide="ignore"):
        inv = np.where(scale == 0, 0, 1 / scale)
    q = round_half_away(blocks * inv).astype(np.int8)
    out = np.concatenate([scale.astype(np.float16).view(np.uint8), q.view(np.uint8)], axis=1)
    return out.reshape(*x.shape[:-1], x.shape[-1] // Q8_0_BLOCK * Q8_0_BYTES)


def dequantize_q8_0(data: np.ndarray) -> np.ndarray:
    """Q8_0 bytes [..., n*34] back to float32 [..., n*32]."""
    blocks = np.asarray(data, dtype=np.uint8).reshape(-1, Q8_0_BYTES)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    return (scale * q).reshape(*data.shape[:-1], data.shape[-1] // Q8_0_BYTES * Q8_0_BLOCK)
