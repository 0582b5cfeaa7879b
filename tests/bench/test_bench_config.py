"""BenchConfig building: pairing --backend/--dtype with models, --quick defaults, errors naming options.

Run: ``pytest tests/bench/test_bench_config.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from distillm_edge.bench.config import FULL, QUICK, BenchConfig, ModelRun, build_config, parse_lengths
from distillm_edge.errors import UserError


def test_backend_given_once_applies_to_all_models_and_per_model_pairs_in_order():
    cfg = build_config(["a", "b"], backends=["gguf"])
    assert [m.backend for m in cfg.models] == ["gguf", "gguf"]
    cfg = build_config(["a", "a", "a"], backends=["torch", "torch", "gguf"], dtypes=["fp32", "bf16", "fp32"])
    assert [(m.backend, m.dtype) for m in cfg.models] == [("torch", "fp32"), ("torch", "bf16"), ("gguf", "fp32")]
    with pytest.raises(UserError, match="--backend was given 2 times for 3 --model"):
        build_config(["a", "b", "c"], backends=["torch", "gguf"])


def test_quick_defaults_and_explicit_options_win():
    quick = build_config(["a"], quick=True)
    assert (quick.prompt_lengths, quick.gen_tokens, quick.repeats) == (
        QUICK["prompt_lengths"], QUICK["gen_tokens"], QUICK["repeats"])
    full = build_config(["a"], out=Path("x"))
    assert (full.prompt_lengths, full.gen_tokens, full.repeats, full.out) == (
        FULL["prompt_lengths"], FULL["gen_tokens"], FULL["repeats"], Path("x"))
    mixed = build_config(["a"], quick=True, prompt_lengths="256,64,64", gen_tokens=8)
    assert mixed.prompt_lengths == (64, 256) and mixed.gen_tokens == 8 and mixed.repeats == QUICK["repeats"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"backend": "tensorrt"}, "--backend 'tensorrt'"),
    ({"dtype": "fp8"}, "--dtype 'fp8'"),
    ({"quantization": "int3"}, "--quantization 'int3'"),
    ({"backend": "gguf", "dtype": "bf16"}, "apply to the torch backend only"),
])
def test_model_run_errors_name_the_option(kwargs, message):
    with pytest.raises(UserError, match=message):
        ModelRun("m", **kwargs)


def test_config_validation_messages():
    run = (ModelRun("m"),)
    with pytest.raises(UserError, match="at least one --model"):
        BenchConfig(models=())
    with pytest.raises(UserError, match="--gen-tokens 1"):
        BenchConfig(models=run, gen_tokens=1)
    with pytest.raises(UserError, match="--prompt-lengths"):
        BenchConfig(models=run, prompt_lengths=(1,))
    with pytest.raises(UserError, match="--threads -1"):
        BenchConfig(models=run, threads=-1)
    with pytest.raises(UserError, match="comma-separated integers"):
        parse_lengths("64,abc")
    assert parse_lengths("1024, 64") == (64, 1024)
