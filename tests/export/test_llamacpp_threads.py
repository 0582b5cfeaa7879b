"""llama.cpp's thread count outside ``bench`` (export's verification, eval, chat) defaults to the
physical cores, as llama.cpp's own tools do: hyper-threads share one core's execution units, and
llama.cpp's barrier-synchronised threads slow down when two of them share a core.

Run: ``pytest tests/export/test_llamacpp_threads.py``.
"""

from __future__ import annotations

import os


def test_default_threads_are_physical_cores(tiny_gguf, monkeypatch):
    import psutil

    from distillm_edge.backends.llamacpp_backend import LlamaCppBackend

    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 4 if logical else 3)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    backend = LlamaCppBackend(str(tiny_gguf("f32")), n_ctx=128)
    try:
        assert backend.info.threads == 3
        assert backend.native.n_threads == 3
    finally:
        backend.close()
    explicit = LlamaCppBackend(str(tiny_gguf("f32")), threads=2, n_ctx=128)
    try:
        assert explicit.info.threads == 2
    finally:
        explicit.close()
