"""CLI for ``distillm-edge redflags check``: test red-flag rules (the packaged ones or your edits).

Reads one text per line (plain text, or JSON lines with a ``text`` field) from a file or stdin and
prints one JSON line per input: its active rule ids and every hit with its span and whether
negation, history or another person suppressed it.

Run: ``echo "Denies chest pain" | distillm-edge redflags check -``;
``distillm-edge redflags check --rules my_rules.yaml tests/safety/redflag_corpus.jsonl``.
Test: ``pytest tests/safety/test_cli.py``.
"""

from __future__ import annotations

import typer

from distillm_edge.cli.common import friendly_errors

redflags_app = typer.Typer(help="Check text against the emergency red-flag rules.", no_args_is_help=True)


@redflags_app.command("check")
def check_command(
    input: str = typer.Argument("-", help="File with one text per line (plain or JSONL with 'text'); '-' = stdin."),
    rules: str = typer.Option(None, "--rules", help="Rules YAML (a file with 'extends: default' adds to the "
                                                    "packaged rules; without it, replaces them)."),
    only_active: bool = typer.Option(False, "--only-active", help="Leave suppressed (negated/history) hits out."),
) -> None:
    """Print one JSON line per input text with its red-flag hits."""
    from distillm_edge.safety.commands import RedflagsCheckConfig, run_redflags_check

    with friendly_errors():
        run_redflags_check(RedflagsCheckConfig(input=input, rules=rules, only_active=only_active))


def register(app: typer.Typer) -> None:
    app.add_typer(redflags_app, name="redflags")
