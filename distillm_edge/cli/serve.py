"""CLI for `distillm-edge serve`: parses options into a ServeConfig and calls serve.run.run.

Run: ``distillm-edge serve --model smollm2-135m-instruct --parallel 4`` (then point any OpenAI
client at ``http://127.0.0.1:8000/v1``).
Test: ``pytest tests/serve/test_cli.py``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from distillm_edge.cli.common import friendly_errors


def serve_command(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m",
                              help="Model: embedded name (runs its GGUF), .gguf file, HF or ONNX directory."),
    backend: str = typer.Option("auto", "--backend", help="auto|gguf|onnx|torch."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs --api-key."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: str = typer.Option(None, "--api-key", envvar="DISTILLM_EDGE_API_KEY",
                                help="Require 'Authorization: Bearer KEY' on every request (except /healthz)."),
    audit_db: Path = typer.Option(None, "--audit-db", help="Audit log database [default: $DISTILLM_EDGE_HOME/audit.sqlite3]."),
    parallel: int = typer.Option(4, "--parallel", help="Concurrent generations (slots) sharing one model."),
    queue: int = typer.Option(16, "--queue", help="Requests that may wait for a slot; beyond them: 429."),
    block_red_flags: bool = typer.Option(False, "--block-red-flags",
                                         help="Withhold drafts with active red flags (finish_reason content_filter)."),
    rules: Path = typer.Option(None, "--rules", help="Red-flag rules file [default: the packaged rules]."),
    threads: int = typer.Option(0, "--threads", help="Backend CPU threads (0: the backend's default)."),
    ctx_per_slot: int = typer.Option(2048, "--ctx-per-slot", help="Tokens of context (prompt + answer) per slot."),
    max_prompt_tokens: int = typer.Option(1536, "--max-prompt-tokens", help="Longest prompt accepted (tokens)."),
    max_tokens_limit: int = typer.Option(512, "--max-tokens-limit", help="Largest max_tokens a request may ask."),
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API, with red flags and the audit log."""
    with friendly_errors():
        from distillm_edge.serve.config import ServeConfig
        from distillm_edge.serve.run import run

        run(ServeConfig(model=model, backend=backend, host=host, port=port, api_key=api_key, audit_db=audit_db,
                        parallel=parallel, queue=queue, block_red_flags=block_red_flags, rules=rules,
                        threads=threads, ctx_per_slot=ctx_per_slot, max_prompt_tokens=max_prompt_tokens,
                        max_tokens_limit=max_tokens_limit))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
