"""Inference backends behind one interface (see ``base.py``): torch, gguf (llama.cpp), onnx.

``open_backend(spec, backend="auto")`` picks the runtime from the spec: a ``.gguf`` file runs on
llama.cpp, an ONNX export directory on ONNX Runtime, anything else (embedded name, Hugging Face
directory, Hub id) on PyTorch. ``backend="gguf"`` with an embedded name opens its shipped GGUF.

Test: ``pytest tests/backends``.
"""

from __future__ import annotations

from distillm_edge.backends.base import Backend, BackendInfo
from distillm_edge.errors import UserError

BACKENDS = ("torch", "gguf", "onnx")


def open_backend(spec: str, backend: str = "auto", **options) -> Backend:
    from distillm_edge.models.sources import resolve

    source = resolve(spec)
    if backend == "auto":
        backend = {"gguf": "gguf", "onnx_dir": "onnx"}.get(source.kind, "torch")
    if backend == "torch":
        from distillm_edge.backends.torch_backend import TorchBackend

        return TorchBackend(spec, **options)
    if backend == "gguf":
        from distillm_edge.backends.llamacpp_backend import LlamaCppBackend

        return LlamaCppBackend(spec, **options)
    if backend == "onnx":
        from distillm_edge.backends.onnx_backend import OnnxBackend

        return OnnxBackend(spec, **options)
    raise UserError(f"backend '{backend}' is not supported; use one of: auto, {', '.join(BACKENDS)}.")


__all__ = ["BACKENDS", "Backend", "BackendInfo", "open_backend"]
