"""A Hugging Face checkpoint directory seen by export: its config, its weights one tensor at a time.

Export never builds the PyTorch model: it reads ``config.json`` and streams tensors out of the
safetensors file(s) (sharded checkpoints through ``model.safetensors.index.json``), so converting
a model needs about one tensor of extra memory. It also states which architectures export
supports and refuses the others with a message that lists them.

Test: ``pytest tests/export/test_gguf.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distillm_edge.errors import UserError

# HF architecture -> llama.cpp architecture, for our GGUF writer. Mistral is the Llama graph (no
# sliding window used in llama.cpp's llama arch; identical for contexts shorter than the window).
SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama"}
# what ONNX Runtime GenAI's model builder converts and our parity check has proven (tests/export)
# (Gemma-3: text-only, through onnx_builder_main's fixes; its sliding-window layers keep a windowed cache)
ONNX_ARCHITECTURES = (*SUPPORTED_ARCHITECTURES, "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM",
                      "Gemma3ForCausalLM")
# builder-supported but not offered, and why
ONNX_NOT_YET = {
    "Gemma3ForConditionalGeneration": (
        "distillm-edge exports text-only Gemma-3 (Gemma3ForCausalLM: gemma-3-270m, gemma-3-1b). The multimodal "
        "model's vision tower is not exported by the builder, its larger sizes scale the global layers' RoPE "
        "(linear, factor 8) and the builder would apply that to the sliding-window layers as well, and the parity "
        "check reads text-only causal LMs, so no parity is proven for it"
    ),
}


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    config: dict[str, Any]
    weight_files: dict[str, Path]  # tensor name -> safetensors file

    @property
    def architecture(self) -> str:
        return (self.config.get("architectures") or ["?"])[0]

    @property
    def head_dim(self) -> int:
        cfg = self.config
        return int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])

    def rope(self) -> dict[str, Any]:
        """RoPE parameters, from transformers 5's ``rope_parameters`` or the older theta/scaling keys."""
        params = dict(self.config.get("rope_parameters") or {})
        if not params:
            params = dict(self.config.get("rope_scaling") or {})
            params.setdefault("rope_theta", self.config.get("rope_theta", 10000.0))
        params.setdefault("rope_type", params.pop("type", "default"))
        return params

    def shapes(self) -> dict[str, tuple[int, ...]]:
        from safetensors import safe_open

        out = {}
        for file in sorted(set(self.weight_files.values())):
            with safe_open(file, framework="pt") as fh:
                for name in fh.keys():
                    out[name] = tuple(fh.get_slice(name).get_shape())
        return out

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """(name, float32 array) for every weight, loading one tensor at a time."""
        import torch
        from safetensors import safe_open

        for file in sorted(set(self.weight_files.values())):
            with safe_open(file, framework="pt") as fh:
                for name in fh.keys():
                    yield name, fh.get_tensor(name).to(torch.float32).numpy()


def open_checkpoint(path: str | Path, fmt: str = "gguf") -> Checkpoint:
    """Read a checkpoint directory, or raise UserError saying what is missing or unsupported for ``fmt``."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError(f"{path}: not a Hugging Face checkpoint (no config.json). Point --model at a checkpoint directory.")
    config = json.loads(config_file.read_text())
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {name: path / file for name, file in weight_map.items()}
    elif (path / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(path / "model.safetensors", framework="pt") as fh:
            files = {name: path / "model.safetensors" for name in fh.keys()}
    else:
        raise UserError(
            f"{path}: no model.safetensors (or sharded index) found; export reads safetensors checkpoints only. "
            "Re-save the model with save_pretrained(safe_serialization=True)."
        )
    ckpt = Checkpoint(path=path, config=config, weight_files=files)
    check_supported(ckpt, fmt)
    return ckpt


def check_supported(ckpt: Checkpoint, fmt: str = "gguf") -> None:
    arch = ckpt.architecture
    what = f"architecture '{arch}' (model_type '{ckpt.config.get('model_type')}')"
    if fmt == "onnx":
        if arch in ONNX_NOT_YET:
            raise UserError(f"{ckpt.path}: {what} is not offered for ONNX export yet: {ONNX_NOT_YET[arch]}. "
                            "Use --format gguf with a GGUF made by llama.cpp's convert_hf_to_gguf.py.")
        if arch not in ONNX_ARCHITECTURES:
            raise UserError(f"{ckpt.path}: {what} cannot be exported to ONNX here. Supported: {', '.join(ONNX_ARCHITECTURES)}.")
        if arch == "Gemma3ForCausalLM":  # per-layer-type rope_parameters (transformers 5) or flat rope_scaling (4)
            params = ckpt.config.get("rope_parameters") or {}
            layered = [p for p in params.values() if isinstance(p, dict)] or [params or ckpt.config.get("rope_scaling") or {}]
            scaled = sorted({p.get("rope_type", p.get("type", "default")) for p in layered} - {"default"})
            if scaled:
                raise UserError(f"{ckpt.path / 'config.json'}: Gemma-3 with RoPE scaling ({', '.join(scaled)}) cannot be "
                                "exported to ONNX: onnxruntime-genai's builder would scale the sliding-window layers' RoPE "
                                "too. The default RoPE (gemma-3-270m, gemma-3-1b) is supported.")
        return
    if arch not in SUPPORTED_ARCHITECTURES:
        onnx_hint = " or use --format onnx, which supports it" if arch in ONNX_ARCHITECTURES else ""
        raise UserError(
            f"{ckpt.path}: {what} cannot be written as GGUF by distillm-edge, which writes the Llama family "
            f"({', '.join(SUPPORTED_ARCHITECTURES)}). Convert it with llama.cpp's own converter, "
            f"convert_hf_to_gguf.py {ckpt.path} --outtype f16 --outfile model.gguf (then pass model.gguf to "
            f"eval/bench){onnx_hint}."
        )
    rope_type = ckpt.rope()["rope_type"]
    if rope_type not in ("default", "linear", "llama3"):
        raise UserError(f"{ckpt.path}: RoPE type '{rope_type}' is not supported; export handles default, linear and llama3.")
