"""The frozen configuration of one `distillm-edge bench` run, validated when it is built.

``build_config`` turns the CLI's raw options into a :class:`BenchConfig`: it pairs each ``--model``
with its ``--backend`` / ``--dtype`` / ``--quantization`` (each given once for all models or once
per model) and fills the ``--quick`` defaults for anything the user left unset.

Test: ``pytest tests/bench/test_bench_config.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from distillm_edge.errors import UserError

BACKENDS = ("auto", "torch", "gguf", "onnx")
DTYPES = ("fp32", "bf16")
QUANTIZATIONS = ("none", "nf4")

FULL = {"prompt_lengths": (64, 512, 1024), "gen_tokens": 128, "repeats": 3, "batch_repeats": None}  # pp512/tg128 as llama-bench
# --quick: finish in about a minute even for torch fp32 on 2 busy cores; batches are timed once
QUICK = {"prompt_lengths": (64,), "gen_tokens": 16, "repeats": 2, "batch_repeats": 1}


@dataclass(frozen=True)
class ModelRun:
    """One model on one backend: a row group of the result table."""

    spec: str
    backend: str = "auto"
    dtype: str = "fp32"  # torch only
    quantization: str = "none"  # torch only

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"--backend '{self.backend}' is not supported; use one of: {', '.join(BACKENDS)}.")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype '{self.dtype}' is not supported; use one of: {', '.join(DTYPES)}.")
        if self.quantization not in QUANTIZATIONS:
            raise UserError(
                f"--quantization '{self.quantization}' is not supported; use one of: {', '.join(QUANTIZATIONS)}."
            )
        torch_only = self.dtype != "fp32" or self.quantization != "none"
        if torch_only and self.backend not in ("torch", "auto"):
            raise UserError(
                f"--dtype/--quantization apply to the torch backend only, but model '{self.spec}' runs on "
                f"--backend {self.backend}; drop them or use --backend torch."
            )

    @property
    def label(self) -> str:
        return self.spec if self.backend == "auto" else f"{self.spec} [{self.backend}]"


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[ModelRun, ...]
    prompt_lengths: tuple[int, ...] = FULL["prompt_lengths"]
    gen_tokens: int = FULL["gen_tokens"]
    repeats: int = FULL["repeats"]
    warmup: int = 1
    threads: int = 0  # 0: one per physical core
    batch_sizes: tuple[int, ...] = (1, 4, 8)
    batch_repeats: int | None = None  # None: like the streams (warm-up + repeats); n: n timed runs, no warm-up
    out: Path = field(default_factory=lambda: Path("runs/bench") / time.strftime("%Y%m%d-%H%M%S"))
    quick: bool = False

    def __post_init__(self) -> None:
        if not self.models:
            raise UserError("no model to benchmark: pass at least one --model PATH|NAME.")
        if not self.prompt_lengths or any(n < 2 for n in self.prompt_lengths):
            raise UserError(f"--prompt-lengths {self.prompt_lengths}: give one or more lengths, each >= 2 tokens.")
        if self.gen_tokens < 2:
            raise UserError(f"--gen-tokens {self.gen_tokens}: decode speed needs at least 2 generated tokens.")
        if self.repeats < 1 or self.warmup < 0:
            raise UserError(f"repeats={self.repeats}, warmup={self.warmup}: need repeats >= 1 and warmup >= 0.")
        if self.threads < 0:
            raise UserError(f"--threads {self.threads}: use a positive number, or 0 for one per physical core.")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise UserError(f"batch sizes {self.batch_sizes}: each must be >= 1.")
        if self.batch_repeats is not None and self.batch_repeats < 1:
            raise UserError(f"batch_repeats={self.batch_repeats}: need at least one timed batch run.")


def parse_lengths(text: str) -> tuple[int, ...]:
    """``"64,256,1024"`` -> ``(64, 256, 1024)``, with an error naming the option on bad input."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"--prompt-lengths '{text}': expected comma-separated integers like 64,256,1024.") from None
    if not values:
        raise UserError("--prompt-lengths is empty: expected comma-separated integers like 64,256,1024.")
    return tuple(sorted(set(values)))


def _per_model(option: str, values: list[str], n_models: int, default: str) -> list[str]:
    if not values:
        return [default] * n_models
    if len(values) == 1:
        return values * n_models
    if len(values) == n_models:
        return values
    raise UserError(
        f"{option} was given {len(values)} times for {n_models} --model options: give it once for all "
        "models or once per model, in the same order."
    )


def build_config(
    models: list[str],
    backends: list[str] | None = None,
    dtypes: list[str] | None = None,
    quantizations: list[str] | None = None,
    prompt_lengths: str | None = None,
    gen_tokens: int | None = None,
    repeats: int | None = None,
    threads: int = 0,
    quick: bool = False,
    out: Path | None = None,
) -> BenchConfig:
    """The CLI's options as a validated config; unset options take the full or ``--quick`` defaults."""
    n = len(models)
    runs = tuple(
        ModelRun(spec, backend, dtype, quant)
        for spec, backend, dtype, quant in zip(
            models,
            _per_model("--backend", backends or [], n, "auto"),
            _per_model("--dtype", dtypes or [], n, "fp32"),
            _per_model("--quantization", quantizations or [], n, "none"),
        )
    )
    defaults = QUICK if quick else FULL
    extra = {"out": Path(out)} if out is not None else {}
    return BenchConfig(
        models=runs,
        prompt_lengths=parse_lengths(prompt_lengths) if prompt_lengths else defaults["prompt_lengths"],
        gen_tokens=gen_tokens if gen_tokens is not None else defaults["gen_tokens"],
        repeats=repeats if repeats is not None else defaults["repeats"],
        batch_repeats=defaults["batch_repeats"],
        threads=threads,
        quick=quick,
        **extra,
    )
