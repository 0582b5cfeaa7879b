"""``ExportConfig``: the one frozen config of ``distillm-edge export``, and the table of output types.

Every quantization the command offers is listed in ``QUANTS`` with how it is produced, its
approximate bits per weight (for ``--list-quants`` size estimates) and the parity criterion its
verification applies:

- ``exact`` (GGUF f32/f16/bf16): top-1 agreement >= 99% and identical 64-token greedy continuations
  (one that parts from the source at a tie of the source is accepted: see ``parity.py``);
- ``close`` (GGUF q8_0, ONNX fp32): top-1 agreement >= 97%;
- ``lossy`` (4-8-bit llama.cpp types, ONNX int4/int8): held-out perplexity may rise by at most
  ``max_ppl_increase`` (default 25%); KL and top-1 are reported.

Measured on SmolLM2-135M (benchmarks/export.py): f16 and ONNX fp32 verify; llama.cpp q8_0 reaches
only ~94% top-1 (+1.5% perplexity; its bytes equal llama.cpp's own quantizer, the loss comes from
8-bit activations in llama.cpp's Q8_0 matmuls), so on this model it is reported as unverified;
ONNX int8 verifies (98.5% top-1, +1.8%) and ONNX int4 (k-quant with 8-bit head and sensitive
layers, see ``onnx_convert.py``) +15.6%. Defaults: f16 and int8.

Test: ``pytest tests/export/test_cli.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distillm_edge.errors import UserError
from distillm_edge.export.gguf_convert import DIRECT_TYPES
from distillm_edge.export.gguf_quantize import LLAMA_CPP_TYPES
from distillm_edge.export.onnx_convert import ONNX_TYPES

FORMATS = ("gguf", "onnx")
DEFAULT_QUANT = {"gguf": "f16", "onnx": "int8"}  # the smallest types that pass the close/exact bars on SmolLM2-135M


@dataclass(frozen=True)
class QuantInfo:
    bits: float  # approximate bits per 2-D weight
    how: str
    check: str  # exact | close | lossy


_DIRECT_BITS = {"f32": 32.0, "f16": 16.0, "bf16": 16.0, "q8_0": 8.5}
QUANTS: dict[str, dict[str, QuantInfo]] = {
    "gguf": {
        **{q: QuantInfo(_DIRECT_BITS[q], "written directly (gguf)", "close" if q == "q8_0" else "exact")
           for q in DIRECT_TYPES},
        **{q: QuantInfo(bits, "llama.cpp quantizer (from f32)", "lossy") for q, (_, bits, _) in LLAMA_CPP_TYPES.items()},
    },
    "onnx": {q: QuantInfo(t.bits, f"ORT GenAI builder: {t.description}", "close" if q == "fp32" else "lossy")
             for q, t in ONNX_TYPES.items()},
}
CRITERIA = {
    "exact": "top-1 >= 99% and identical greedy continuations (a parting at a tie of the source allowed)",
    "close": "top-1 >= 97%",
    "lossy": "perplexity increase <= --max-ppl-increase",
}


@dataclass(frozen=True)
class ExportConfig:
    model: str
    format: str = "gguf"
    quant: str | None = None  # None: DEFAULT_QUANT[format]
    outdir: Path = Path("exports")
    verify: bool = True
    max_ppl_increase: float = 0.25  # fraction: 0.25 = perplexity may grow by 25% for lossy types
    threads: int = 0  # 0: all cores (llama.cpp, ONNX Runtime, quantizer)
    list_quants: bool = False
    imatrix: str | None = None  # "builtin" (calibrate on the built-in corpus) or an imatrix file; llama.cpp types only

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UserError(f"--format '{self.format}' is not supported; use gguf or onnx.")
        quant = (self.quant or DEFAULT_QUANT[self.format]).lower()
        if quant not in QUANTS[self.format]:
            other = next(f for f in FORMATS if f != self.format)
            hint = f" ('{quant}' is a {other} type: use --format {other})" if quant in QUANTS[other] else ""
            raise UserError(
                f"--quant '{quant}' is not available for --format {self.format}{hint}; "
                f"choose one of {', '.join(QUANTS[self.format])} (see --list-quants)."
            )
        object.__setattr__(self, "quant", quant)
        object.__setattr__(self, "outdir", Path(self.outdir))
        if not 0 < self.max_ppl_increase:
            raise UserError(f"--max-ppl-increase must be positive (0.25 = 25%), got {self.max_ppl_increase}.")
        if self.threads < 0:
            raise UserError(f"--threads must be 0 (all cores) or positive, got {self.threads}.")
        if self.imatrix is not None and (self.format != "gguf" or quant not in LLAMA_CPP_TYPES):
            raise UserError(f"--imatrix applies to the llama.cpp quantizer's types ({', '.join(LLAMA_CPP_TYPES)}), "
                            f"not to --format {self.format} --quant {quant}; drop --imatrix or pick one of those types.")

    @property
    def check(self) -> str:
        return QUANTS[self.format][self.quant].check  # type: ignore[index]
