"""CLI for `distillm-edge bench` (and `bench compare`): parses options into a BenchConfig, calls run.

Run: ``distillm-edge bench --model smollm2-135m-instruct --backend gguf --quick`` or
``distillm-edge bench compare A/bench.json B/bench.json``.
Test: ``pytest tests/bench/test_bench_cli.py``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from distillm_edge.cli.common import friendly_errors

bench_app = typer.Typer(
    help="Time models on torch / llama.cpp (GGUF) / ONNX Runtime: TTFT, tokens/s, latency, memory.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@bench_app.callback()
def bench(
    ctx: typer.Context,
    model: list[str] = typer.Option(None, "--model", "-m", help="Model: embedded name, .gguf, HF or ONNX dir. Repeatable."),
    backend: list[str] = typer.Option(None, "--backend", help="auto|torch|gguf|onnx, once for all models or once per model."),
    dtype: list[str] = typer.Option(None, "--dtype", help="torch dtype fp32|bf16 (once, or once per model)."),
    quantization: list[str] = typer.Option(None, "--quantization", help="torch quantization none|nf4 (once, or per model)."),
    prompt_lengths: str = typer.Option(None, "--prompt-lengths", help="Prompt tokens, e.g. 64,512,1024 (the default: pp512 as llama-bench; quick: 64)."),
    gen_tokens: int = typer.Option(None, "--gen-tokens", help="Generated tokens per run (default 128; quick: 16)."),
    repeats: int = typer.Option(None, "--repeats", help="Timed repetitions per row (default 3; quick: 2)."),
    threads: int = typer.Option(0, "--threads", help="Threads per backend (0: one per physical core)."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: 64-token prompt, 16 tokens, 2 repetitions, batches timed once."),
    out: Path = typer.Option(None, "--out", help="Output directory (default runs/bench/<timestamp>)."),
) -> None:
    """Benchmark one or more models; writes bench.json, report.md and charts to --out."""
    if ctx.invoked_subcommand is not None:
        return
    with friendly_errors():
        from distillm_edge.bench.config import build_config
        from distillm_edge.bench.run import run

        if not model:
            raise typer.BadParameter("pass at least one --model (e.g. --model smollm2-135m-instruct)", param_hint="--model")
        cfg = build_config(model, backend, dtype, quantization, prompt_lengths, gen_tokens, repeats, threads, quick, out)
        run(cfg)


@bench_app.command("compare")
def compare(
    a: Path = typer.Argument(..., help="The baseline bench.json (A)."),
    b: Path = typer.Argument(..., help="The bench.json to compare against it (B)."),
) -> None:
    """Show the change from run A to run B: ratios per model × backend × prompt length."""
    with friendly_errors():
        from distillm_edge.bench.compare import run_compare

        run_compare(a, b)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
