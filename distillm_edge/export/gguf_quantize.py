"""Quantize a GGUF file with llama.cpp's own quantizer (through llama-cpp-python), and report the result.

Types other than f32/f16/bf16/q8_0 (which ``gguf_convert.py`` writes directly) are made the way
llama.cpp users make them: from an f32 GGUF, ``llama_model_quantize`` with the default parameters
and the requested file type. The quantizer mixes types on purpose (Q4_K_M keeps some attention-V
and FFN-down tensors in Q6_K) and falls back when a tensor cannot hold the requested type:

K-quants (Q2_K … Q6_K) and IQ4_XS pack each row in 256-value super-blocks, so a tensor whose row
length (its input width) is not a multiple of 256 cannot use them. SmolLM2 is 576 wide (576 =
2·256 + 64), so every tensor that reads the hidden state (q, k, v, attention output, gate, up, and
the token embedding) falls back to a 32-value-block type (Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0,
Q2_K/Q3_K/IQ4_XS→IQ4_NL); only ``ffn_down`` (1536 = 6·256 wide) keeps the k-quant. A "Q4_K_M"
SmolLM2 is therefore mostly Q5_0 and about 5.9 bits per weight, not 4.9.
llama.cpp logs each fallback; :func:`quantize` captures that log and returns them, and
:func:`tensor_types` reads the written types back, so the manifest says exactly what the file holds.
Note that llama.cpp also gives the output/embedding tensor a higher type (Q6_K) in most mixes, so
even Q4_0 has one fallback on SmolLM2 (``token_embd`` Q6_K → Q8_0).

Test: ``pytest tests/export/test_gguf_llamacpp.py -k q4_k_m``.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillm_edge.errors import UserError

# our name -> (llama_ftype, approximate bits per weight, main GGML type)
LLAMA_CPP_TYPES: dict[str, tuple[int, float, str]] = {
    "q4_0": (2, 4.5, "Q4_0"),
    "q4_1": (3, 5.0, "Q4_1"),
    "q5_0": (8, 5.5, "Q5_0"),
    "q5_1": (9, 6.0, "Q5_1"),
    "q2_k": (10, 3.0, "Q2_K"),
    "q3_k_m": (12, 3.9, "Q3_K"),
    "q4_k_s": (14, 4.6, "Q4_K"),
    "q4_k_m": (15, 4.9, "Q4_K"),
    "q5_k_s": (16, 5.5, "Q5_K"),
    "q5_k_m": (17, 5.7, "Q5_K"),
    "q6_k": (18, 6.6, "Q6_K"),
    "iq4_nl": (25, 4.5, "IQ4_NL"),
    "iq4_xs": (30, 4.3, "IQ4_XS"),
}


# one fallback as llama.cpp's ``tensor_type_fallback`` logs it (``%3d`` block sizes, so " 32" has two
# spaces); when even the 32-block type does not fit, "(WARNING: must use F16 due to unusual shape)"
# comes before the arrow and the tensor is stored as F16
_FALLBACK = re.compile(
    r"(?P<tensor>\S+)\s+- ncols\s+(?P<row>\d+) not divisible by\s+(?P<block>\d+) "
    r"\(required for type\s+(?P<wanted>\S+)\)\s*(?P<f16>\(WARNING: must use F16 due to unusual shape\))?\s*"
    r"-> falling back to\s+(?P<used>\S+)"
)
_NO_IMATRIX = re.compile(r"did not find weights for (?P<tensor>\S+)")


@dataclass(frozen=True)
class Quantized:
    """What llama.cpp's quantizer reported: fallbacks ``{tensor: {row, wanted, used, unusual_shape}}``
    and, with an imatrix, the quantized tensors it had no entry for (the token embedding and LM
    head are expected there: llama-imatrix collects ``blk.*`` weights only)."""

    fallbacks: dict[str, dict]
    imatrix_entries: int = 0
    imatrix_missing: tuple[str, ...] = ()


def quantize(src: Path, dst: Path, quant: str, threads: int = 0,
             imatrix: dict[str, np.ndarray] | None = None) -> Quantized:
    """llama.cpp's quantizer: ``src`` (an f32/f16 GGUF) → ``dst`` of type ``quant``.

    ``imatrix``: ``{llama.cpp weight name: mean squared activation per input column}`` (see
    ``imatrix.Imatrix.values``), passed through ``llama_model_quantize_params.imatrix``. llama.cpp's
    log is captured (not printed) while it runs.
    """
    if quant not in LLAMA_CPP_TYPES:
        raise UserError(f"'{quant}' is not a llama.cpp quantization type we offer; use one of {', '.join(LLAMA_CPP_TYPES)}.")
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_CPP_TYPES[quant][0]
    params.nthread = threads
    keep_alive = _imatrix_array(imatrix, params) if imatrix else None
    with captured_llama_log() as lines:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    del keep_alive
    log = "".join(lines)
    if rc != 0:
        tail = "".join(lines[-5:]).strip()
        raise RuntimeError(f"llama.cpp could not quantize {src} to {quant} (return code {rc}): {tail}")
    if imatrix and "have importance matrix data" not in log:
        raise RuntimeError(f"llama.cpp did not report using the importance matrix while quantizing {src}.")
    return Quantized(parse_fallbacks(log), len(imatrix or {}), tuple(parse_missing_imatrix(log)) if imatrix else ())


def _imatrix_array(imatrix: dict[str, np.ndarray], params) -> list:
    """Fill ``params.imatrix`` with a NULL-terminated ``llama_model_imatrix_data`` array; returns the
    Python objects that must stay alive until the quantizer has copied them."""
    import llama_cpp

    entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
    keep: list = [entries]
    for i, (name, values) in enumerate(sorted(imatrix.items())):
        arr = np.ascontiguousarray(values, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise UserError(f"imatrix entry {name} holds non-finite values; recompute the imatrix.")
        raw = name.encode()
        keep += [arr, raw]
        entries[i].name = raw
        entries[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entries[i].size = arr.size
    entries[len(imatrix)].name = None  # the terminator llama.cpp stops at
    params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    return keep


@contextlib.contextmanager
def captured_llama_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines instead of printing them (llama-cpp-python's logger is restored after)."""
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def capture(level, text, user_data):
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def parse_fallbacks(log: str) -> dict[str, dict]:
    """The "falling back to" warnings of llama.cpp's quantizer as ``{tensor: {row, wanted, used}}``."""
    return {m["tensor"]: {"row": int(m["row"]), "wanted": m["wanted"].upper(), "used": m["used"].upper(),
                          "unusual_shape": m["f16"] is not None}
            for m in _FALLBACK.finditer(log)}


def parse_missing_imatrix(log: str) -> list[str]:
    """Tensors the quantizer found no imatrix entry for ("did not find weights for ...")."""
    return sorted({m["tensor"] for m in _NO_IMATRIX.finditer(log)})


def tensor_types(path: Path) -> dict[str, str]:
    """{tensor name: GGML type name} as written in a GGUF file."""
    from gguf import GGUFReader

    return {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}


def metadata_string(path: Path, key: str) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get(key)
    return None if field is None else str(field.contents())


def type_counts(types: dict[str, str]) -> dict[str, int]:
    return dict(sorted(Counter(types.values()).items()))
