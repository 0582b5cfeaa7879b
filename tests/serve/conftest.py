"""Fixtures for the serve tests (helpers live in ``serve_helpers.py``).

Run: ``pytest tests/serve``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_backend(tiny_llama_dir):
    from distillm_edge.backends.torch_backend import TorchBackend

    return TorchBackend(str(tiny_llama_dir), threads=1)


@pytest.fixture(scope="session")
def tiny_onnx_backend(tiny_llama_dir, tmp_path_factory):
    """The tiny random Llama exported to an fp32 ONNX folder (shared KV buffers: serve batches it)."""
    from distillm_edge.backends.onnx_backend import OnnxBackend
    from distillm_edge.export import ExportConfig, run

    out = tmp_path_factory.mktemp("tiny_onnx")
    art = run(ExportConfig(model=str(tiny_llama_dir), format="onnx", quant="fp32", outdir=out, verify=False)).artifact
    backend = OnnxBackend(str(art), threads=1)
    yield backend
    backend.close()
