"""Fixtures shared by the backend tests.

- ``tiny_onnx_dir``: the tiny random Llama exported once per session to an fp32 ONNX Runtime GenAI
  folder (``export.run``; GroupQueryAttention with a shared past/present KV buffer). The ONNX backend,
  shared-buffer and batched-decode tests read it; a test that edits an export copies it first.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_onnx_dir(tmp_path_factory, tiny_llama_dir) -> Path:
    from distillm_edge.export import ExportConfig, run

    out = tmp_path_factory.mktemp("tiny_onnx")
    return run(ExportConfig(model=str(tiny_llama_dir), format="onnx", quant="fp32", outdir=out, verify=False)).artifact
