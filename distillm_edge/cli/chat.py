"""CLI for `distillm-edge chat`: parses options into a ChatConfig and calls chat.run.run.

Run: ``distillm-edge chat`` (embedded SmolLM2 GGUF), or
``distillm-edge chat --model runs/x/model --backend torch --clinician "Dr Okafor"``.
Test: ``pytest tests/chat/test_chat_config.py``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from distillm_edge.cli.common import friendly_errors


def chat(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m",
                              help="Embedded name, .gguf file, HF checkpoint or ONNX export directory."),
    backend: str = typer.Option("auto", "--backend",
                                help="auto|gguf|onnx|torch (auto: an embedded name runs its GGUF)."),
    clinician: str = typer.Option(None, "--clinician", help="Your name or staff ID (asked at start if absent)."),
    audit_db: Path = typer.Option(None, "--audit-db", help="Audit log (default $DISTILLM_EDGE_HOME/audit.sqlite3)."),
    system_prompt: Path = typer.Option(None, "--system-prompt", help="A text file with the system prompt."),
    db: Path = typer.Option(None, "--db", help="Conversations database (default $DISTILLM_EDGE_HOME/chat.sqlite3)."),
) -> None:
    """Clinician-supervised chat: every answer is a draft to approve, edit, reject or regenerate."""
    with friendly_errors():
        from distillm_edge.chat.config import ChatConfig
        from distillm_edge.chat.run import run

        run(ChatConfig(model=model, backend=backend, clinician=clinician, audit_db=audit_db,
                       system_prompt_file=system_prompt, db=db))


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
