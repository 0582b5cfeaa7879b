"""``distillm-edge export``: turn a Llama-family checkpoint into a GGUF file or an ONNX directory and verify it.

- ``config.py``: ``ExportConfig`` and the table of output types;
- ``checkpoint.py``: reading a checkpoint's config and weights, supported architectures;
- ``tensors.py``: pure array functions (Q/K permutation, RoPE factors, BF16, Q8_0);
- ``gguf_vocab.py`` / ``gguf_convert.py``: the GGUF writer (tokenizer, metadata, tensors);
- ``gguf_quantize.py``: llama.cpp's quantizer for the other GGUF types, and its fallbacks;
- ``onnx_convert.py``: ONNX Runtime GenAI's model builder;
- ``parity.py`` (+ ``parity_prompts.json``): source-vs-artifact figures and the pass/fail rules;
- ``manifest.py``: the manifest beside each artifact; ``run.py``: the command itself.

Run: ``distillm-edge export --help``. Test: ``pytest tests/export``.
"""

from distillm_edge.export.config import QUANTS, ExportConfig
from distillm_edge.export.run import ExportResult, run
from distillm_edge.export.run import list_quants as list_quants_table

__all__ = ["QUANTS", "ExportConfig", "ExportResult", "list_quants_table", "run"]
