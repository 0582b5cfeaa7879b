"""The ``manifest.json`` written beside every export: what it is, where it came from, how well it matches.

Fields: source (spec, directory, sha256 of its weight/config files, architecture, parameter
count), format and quantization, files with sizes and sha256, bits per weight, tokenizer and chat
template hashes, the export details (tool, tensor types, llama.cpp fallbacks), the parity figures
and the criterion they were judged by, tool versions, and ``verified`` (true only when the parity
check ran and passed; ``--no-verify`` and failed checks both leave it false).

Test: ``pytest tests/export/test_gguf.py -k manifest``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import time
from pathlib import Path
from typing import Any

from distillm_edge.io import sha256_dir, sha256_file

_TOOLS = ("distillm-edge", "gguf", "llama_cpp_python", "onnxruntime", "onnxruntime-genai", "onnx-ir", "onnx",
          "transformers", "torch", "numpy")


def tool_versions() -> dict[str, str]:
    out = {}
    for name in _TOOLS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def file_entries(artifact: Path) -> dict[str, dict[str, Any]]:
    """{relative name: {bytes, sha256}} for a file or every file of a directory (manifest excluded)."""
    files = sorted(p for p in artifact.rglob("*") if p.is_file()) if artifact.is_dir() else [artifact]
    base = artifact if artifact.is_dir() else artifact.parent
    return {str(p.relative_to(base)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in files if p.name != "manifest.json"}


def tokenizer_hashes(tokenizer, checkpoint: Path) -> dict[str, str | None]:
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    tok_file = checkpoint / "tokenizer.json"
    return {
        "tokenizer_json_sha256": sha256_file(tok_file) if tok_file.is_file() else None,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
    }


def build_manifest(*, cfg, source_spec: str, checkpoint: Path, architecture: str, num_parameters: int,
                   artifact: Path, name: str, tokenizer, export: dict[str, Any], parity: dict | None,
                   failures: list[str], verified: bool) -> dict[str, Any]:
    files = file_entries(artifact)
    total = sum(f["bytes"] for f in files.values())
    weights = sum(f["bytes"] for name, f in files.items() if name.endswith((".gguf", ".onnx", ".onnx.data")))
    return {
        "artifact": name,
        "format": cfg.format,
        "quant": cfg.quant,
        "verified": verified,
        "failures": failures,
        "criterion": cfg.check,
        "max_ppl_increase": cfg.max_ppl_increase if cfg.check == "lossy" else None,
        "parity": parity,
        "source": {"model": source_spec, "path": str(checkpoint), "sha256": sha256_dir(checkpoint),
                   "architecture": architecture, "num_parameters": num_parameters},
        "files": files,
        "total_bytes": total,
        "weights_bytes": weights,
        "bits_per_weight": round(weights * 8 / num_parameters, 3),  # weight files only (not the tokenizer)
        "tokenizer": tokenizer_hashes(tokenizer, checkpoint),
        "export": export,
        "versions": tool_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
