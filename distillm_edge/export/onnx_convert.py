"""Export a checkpoint to ONNX with a key/value cache, via ONNX Runtime GenAI's model builder.

Why this tool: ``optimum``'s ONNX exporter (``optimum-onnx``) pins transformers < 4.58 and cannot
be installed beside our transformers 5.x. ONNX Runtime GenAI's model builder
(``python -m onnxruntime_genai.models.builder``) works with transformers 5 on a local checkpoint
directory offline, and writes what an edge deployment wants: one decoder graph with
``past_key_values.N.key/value`` inputs and ``present.N.*`` outputs (fused GroupQueryAttention,
rotary caches, SimplifiedLayerNorm), weight-only block-wise quantization through ``MatMulNBits``
(int4: symmetric, blocks of 32, int8 activations on CPU — accuracy level 4; int8 likewise with 8
bits), a ``genai_config.json`` so ``onnxruntime_genai`` runs it as is, and the Hugging Face
tokenizer files and chat template beside the graph. Its one undeclared dependency, ``onnx-ir``,
must be installed.

The builder runs in a subprocess (its console output is parsed into a progress bar and kept for
error messages) into a temporary directory that ``run.py`` renames into place. It runs through
``onnx_builder_main``, which fixes the builder's view of Gemma-3 (RoPE in transformers 5's nested
form; the rounded embedding scale) and otherwise runs the builder's own ``__main__``.

Run: ``distillm-edge export --model smollm2-135m-instruct --format onnx --quant int4``.
Test: ``pytest tests/export/test_onnx.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distillm_edge.errors import UserError


@dataclass(frozen=True)
class OnnxType:
    precision: str  # the builder's -p
    bits: float  # approximate bits per 2-D weight
    description: str
    extra_options: tuple[str, ...] = ()  # the builder's --extra_options KEY=VALUE


# int4 follows llama.cpp's Q4_K_M idea: k-quant 4-bit blocks for the body, 8-bit for the LM head
# (tied to the embedding, so the shared matrix is 8-bit) and for the most sensitive MatMuls (first
# and last eighth of the layers, every third layer's qkv/v/down projections). Measured on
# SmolLM2-135M (full parity set, held-out perplexity increase / top-1 / size):
#   builder default (RTN, tied embedding+head 4-bit)          +38.5%  53%   90 MB  (fails the +25% bound)
#   k-quant, head 8-bit                                       +28.4%  62%  107 MB
#   RTN, untied, head 8-bit, embedding float32                +24.8%  59%  217 MB
#   k-quant, head + sensitive layers 8-bit (chosen)           +15.6%  69%  117 MB
# (llama.cpp Q4_K_M on the same model: +11.9%, 105 MB.)
ONNX_TYPES: dict[str, OnnxType] = {
    "fp32": OnnxType("fp32", 32.0, "float32 weights"),
    "int8": OnnxType("int8", 8.5, "MatMulNBits 8-bit, blocks of 32, int8 compute"),
    "int4": OnnxType("int4", 7.0, "MatMulNBits 4-bit k-quant, blocks of 32, int8 compute; LM head/embedding and "
                     "sensitive layers 8-bit", ("algo_config=k_quant", "matmul_mixed_precision=last_matmul:int8,mixed_layers:int8")),
}

EXTRA_FILES = ("generation_config.json",)
TESTED_BUILDER = "0.18.0"  # the onnxruntime-genai whose builder applies every option above (pyproject's floor)
_LAYER = re.compile(r"Reading layer (\d+)")


def builder_available() -> str | None:
    """None when the builder can run, else what to install."""
    try:
        import onnx_ir  # noqa: F401  (the builder imports it; onnxruntime-genai does not declare it)
        import onnxruntime_genai  # noqa: F401
    except ImportError as exc:
        return f"ONNX export needs '{exc.name}': pip install onnxruntime-genai onnx-ir"
    return None


def build_onnx(checkpoint: Path, out_dir: Path, quant: str, num_layers: int,
               progress: Callable[[int, int], None] | None = None,
               extra_options: tuple[str, ...] | None = None) -> dict:
    """Build the ONNX model of ``checkpoint`` into the empty directory ``out_dir``.

    Returns the builder options used (for the manifest). ``progress(layers_read, num_layers)``;
    ``extra_options`` replaces the type's own builder options (benchmarks compare variants).
    """
    if quant not in ONNX_TYPES:
        raise UserError(f"ONNX type '{quant}' is not offered; use one of {', '.join(ONNX_TYPES)}.")
    kind = ONNX_TYPES[quant]
    missing = builder_available()
    if missing:
        raise UserError(missing)
    cache = out_dir / ".builder-cache"
    # the builder's own command line, through onnx_builder_main (Gemma-3's RoPE and embedding-scale fixes)
    cmd = [sys.executable, "-m", "distillm_edge.export.onnx_builder_main", "-i", str(checkpoint), "-o", str(out_dir),
           "-p", kind.precision, "-e", "cpu", "-c", str(cache)]
    extra = kind.extra_options if extra_options is None else tuple(extra_options)
    if extra:
        cmd += ["--extra_options", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line.rstrip())
            m = _LAYER.search(line)
            if m and progress is not None:
                progress(int(m.group(1)) + 1, num_layers)
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0 or not (out_dir / "model.onnx").is_file():
        tail = "\n".join(line for line in log[-15:] if line.strip())
        raise RuntimeError(f"the ONNX Runtime GenAI model builder failed (exit {proc.returncode}):\n{tail}")
    for name in EXTRA_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, out_dir / name)
    applied = applied_quantization(out_dir / "model.onnx")
    ignored = ignored_options(kind.precision, extra, applied)
    if ignored:
        raise RuntimeError(
            f"onnxruntime-genai {_version()}'s model builder ignored our {quant} options ({'; '.join(ignored)}); "
            f"the graph in {out_dir} is not what '{quant}' promises. Install onnxruntime-genai>={TESTED_BUILDER}, "
            "the version these options were tested with."
        )
    return {"tool": "onnxruntime_genai.models.builder", "builder_version": _version(), "precision": kind.precision,
            "execution_provider": "cpu", "weights": kind.description, "extra_options": list(extra), "applied": applied}


def _version() -> str:
    from importlib.metadata import version

    return version("onnxruntime-genai")


def applied_quantization(graph_file: Path) -> dict:
    """What the built graph holds, read back from it: MatMulNBits nodes per bit width (with block
    size), the LM head's width (0 = float MatMul) and how the embedding is stored."""
    import onnx

    model = onnx.load(str(graph_file), load_external_data=False)
    widths: dict[str, int] = {}
    blocks: set[int] = set()
    head, embedding = 0, "float"
    for node in model.graph.node:
        attrs = {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}
        if node.op_type == "MatMulNBits":
            bits = attrs.get("bits", 4)
            widths[f"int{bits}"] = widths.get(f"int{bits}", 0) + 1
            blocks.add(attrs.get("block_size", 0))
            if "lm_head" in node.name:
                head = bits
        elif node.op_type == "GatherBlockQuantized":
            embedding = f"int{attrs.get('bits', 4)}"
    return {"matmul_nbits": dict(sorted(widths.items())), "block_sizes": sorted(blocks), "lm_head_bits": head,
            "embedding": embedding}


def ignored_options(precision: str, extra: tuple[str, ...], applied: dict) -> list[str]:
    """The requested quantization choices the built graph does not show (empty when all were applied)."""
    options = dict(opt.split("=", 1) for opt in extra if "=" in opt)
    mixed = dict(item.split(":", 1) for item in options.get("matmul_mixed_precision", "").split(",") if ":" in item)
    nbits = applied["matmul_nbits"]
    out = []
    if precision in ("int4", "int8") and not nbits:
        out.append(f"-p {precision}: no MatMulNBits node in the graph")
    if precision == "int4" and "int4" not in nbits and nbits:
        out.append("-p int4: no 4-bit MatMulNBits node")
    if mixed.get("last_matmul") == "int8" and applied["lm_head_bits"] != 8:
        out.append(f"last_matmul:int8 but the LM head is {applied['lm_head_bits'] or 'float'}-bit")
    if mixed.get("mixed_layers") == "int8" and nbits.get("int8", 0) <= (applied["lm_head_bits"] == 8):
        out.append("mixed_layers:int8 but no layer MatMul is 8-bit")
    return out
