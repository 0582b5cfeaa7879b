"""ONNX builds are read back: the manifest records what the graph holds (MatMulNBits widths, LM
head, embedding), and a builder that silently ignores our int4 options (as onnxruntime-genai
builders before the tested version do with unknown ``--extra_options``) is an error, not an
artifact mislabelled "int4".

Run: ``pytest tests/export/test_onnx_options.py``.
"""

from __future__ import annotations

import subprocess

import pytest

from distillm_edge.export import onnx_convert


def test_ignored_options_rules():
    extra = onnx_convert.ONNX_TYPES["int4"].extra_options
    good = {"matmul_nbits": {"int4": 5, "int8": 10}, "lm_head_bits": 8, "block_sizes": [32], "embedding": "float"}
    assert onnx_convert.ignored_options("int4", extra, good) == []
    plain = {"matmul_nbits": {"int4": 15}, "lm_head_bits": 4, "block_sizes": [32], "embedding": "int4"}
    found = onnx_convert.ignored_options("int4", extra, plain)
    assert any("last_matmul" in f for f in found) and any("mixed_layers" in f for f in found)
    assert onnx_convert.ignored_options("int4", (), plain) == []  # nothing asked, nothing ignored
    assert onnx_convert.ignored_options("int8", (), {"matmul_nbits": {}, "lm_head_bits": 0}) != []


def test_a_builder_that_ignores_the_int4_options_is_refused(tmp_path, tiny_llama_dir, monkeypatch):
    real = subprocess.Popen

    def old_builder(cmd, *args, **kwargs):  # drops --extra_options, as an old builder ignores them
        if "--extra_options" in cmd:
            cmd = cmd[: cmd.index("--extra_options")]
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", old_builder)
    with pytest.raises(RuntimeError, match="ignored our int4 options"):
        onnx_convert.build_onnx(tiny_llama_dir, tmp_path / "out", "int4", 2)


def test_int4_build_records_what_was_applied(tmp_path, tiny_llama_dir):
    details = onnx_convert.build_onnx(tiny_llama_dir, tmp_path / "out", "int4", 2)
    applied = details["applied"]
    assert applied["lm_head_bits"] == 8 and applied["matmul_nbits"].get("int4", 0) > 0
    assert applied["block_sizes"] == [32]
    assert details["builder_version"]
