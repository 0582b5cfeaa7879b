"""Load a model spec as a ``transformers`` causal LM and tokenizer, with dtype/device/quantization.

Every command that runs a PyTorch model goes through :func:`load_model` / :func:`load_tokenizer`.
Options: ``dtype`` fp32/bf16/fp16, ``device`` (``cpu``, ``cuda``, ``cuda:1``) or ``device_map``
(``auto`` for multi-GPU teachers), and ``quantization`` none/nf4/int8 through bitsandbytes (NF4
with double quantization and a bf16 compute dtype, as the research loads its 8B teachers).
NF4/int8 on a CPU works with recent bitsandbytes but is slow; a warning says so.
``trust_remote_code`` stays off unless the caller asks for it.

Test: ``pytest tests/models``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Literal

from distillm_edge.errors import UserError
from distillm_edge.models.sources import local_dir, resolve

DType = Literal["float32", "bfloat16", "float16"]
Quantization = Literal["none", "nf4", "int8"]
_DTYPE_ALIASES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
                  "fp16": "float16", "float16": "float16", "auto": "float32"}


@dataclass(frozen=True)
class LoadOptions:
    dtype: str = "float32"
    device: str = "cpu"
    device_map: str | None = None
    quantization: str = "none"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPE_ALIASES:
            raise UserError(f"dtype '{self.dtype}' is not supported; use fp32, bf16 or fp16.")
        if self.quantization not in ("none", "nf4", "int8"):
            raise UserError(f"quantization '{self.quantization}' is not supported; use none, nf4 or int8.")


def torch_dtype(name: str):
    import torch

    if name not in _DTYPE_ALIASES:
        raise UserError(f"dtype '{name}' is not supported; use fp32, bf16 or fp16.")
    return getattr(torch, _DTYPE_ALIASES[name])


def _hub_hint(spec: str, exc: Exception) -> UserError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    why = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else "it could not be downloaded"
    return UserError(
        f"Hub model '{spec}' is not in the local Hugging Face cache and {why} ({type(exc).__name__}). "
        f"Download it once while online (huggingface-cli download {spec}), or pass a local checkpoint "
        "directory or .gguf file instead."
    )


def load_tokenizer(spec: str, progress: bool = True):
    """The tokenizer of a model spec (GGUF sources are materialized first, so this is fast later)."""
    from transformers import AutoTokenizer

    where = local_dir(spec, progress=progress)
    try:
        return AutoTokenizer.from_pretrained(where)
    except OSError as exc:
        if resolve(spec).kind == "hub":
            raise _hub_hint(spec, exc) from None
        raise UserError(f"could not load a tokenizer from {where}: {exc}") from None


def load_model(spec: str, options: LoadOptions | None = None, progress: bool = True):
    """Return ``(model, tokenizer)`` for a model spec, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    options = options or LoadOptions()
    where = local_dir(spec, progress=progress)
    kwargs: dict = {"dtype": torch_dtype(options.dtype), "trust_remote_code": options.trust_remote_code}
    if options.quantization != "none":
        from transformers import BitsAndBytesConfig

        if not torch.cuda.is_available():
            warnings.warn(
                f"{options.quantization} quantization on a CPU is supported by bitsandbytes but slow; "
                "use it on a GPU for real runs.",
                stacklevel=2,
            )
        if options.quantization == "nf4":
            compute = torch.bfloat16 if options.dtype in ("bf16", "bfloat16", "float32", "fp32") else torch.float16
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute,
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    if options.device_map:
        kwargs["device_map"] = options.device_map
    elif options.quantization != "none":
        kwargs["device_map"] = {"": options.device}
    try:
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except OSError as exc:
        if resolve(spec).kind == "hub":
            raise _hub_hint(spec, exc) from None
        raise UserError(f"could not load a model from {where}: {exc}") from None
    if not options.device_map and options.quantization == "none":
        model = model.to(options.device)
    model.eval()
    tokenizer = load_tokenizer(spec, progress=progress)
    return model, tokenizer
