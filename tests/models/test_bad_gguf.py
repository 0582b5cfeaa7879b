"""A corrupt, truncated or unsupported GGUF file gets one clear error (a ``UserError`` naming the
file and what to do; exit code 2 on the command line), not a traceback, on every path that takes
a model: the torch backend (materialization), the llama.cpp backend, ``export`` and ``eval``.

Files are made here: a GGUF cut off in its tensor data, random bytes named ``.gguf``, and a valid
GGUF of an architecture transformers cannot load.

Run: ``pytest tests/models/test_bad_gguf.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from distillm_edge.errors import UserError


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    import gguf

    out = tmp_path_factory.mktemp("bad_gguf")
    good = out / "good.gguf"
    writer = gguf.GGUFWriter(str(good), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((64, 4096), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (out / "truncated.gguf").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (out / "random.gguf").write_bytes(np.random.default_rng(0).bytes(50_000))
    weird = out / "unsupported.gguf"
    writer = gguf.GGUFWriter(str(weird), "no-such-arch")
    writer.add_tensor("x.weight", np.ones((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


KINDS = {"truncated": "truncated|corrupt", "random": "not a GGUF file", "unsupported": "no-such-arch"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_torch_backend_materialization(bad_files, kind, tmp_path, monkeypatch):
    from distillm_edge.backends import open_backend

    monkeypatch.setenv("DISTILLM_EDGE_HOME", str(tmp_path))
    path = bad_files / f"{kind}.gguf"
    with pytest.raises(UserError, match=KINDS[kind]) as info:
        open_backend(str(path), backend="torch")
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", ["truncated", "random"])
def test_llamacpp_backend(bad_files, kind):
    from distillm_edge.backends import open_backend

    path = bad_files / f"{kind}.gguf"
    with pytest.raises(UserError, match=KINDS[kind]) as info:
        open_backend(str(path), backend="gguf")
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("command", ["export", "eval"])
def test_commands_exit_2_with_one_line(bad_files, kind, command, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from distillm_edge.cli import app

    monkeypatch.setenv("DISTILLM_EDGE_HOME", str(tmp_path))
    path = bad_files / f"{kind}.gguf"
    args = {"export": ["export", "--model", str(path), "--outdir", str(tmp_path / "out")],
            "eval": ["eval", "--model", str(path), "--backend", "torch", "--tasks", "generation",
                     "--out", str(tmp_path / "run")]}[command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "error:" in result.output
