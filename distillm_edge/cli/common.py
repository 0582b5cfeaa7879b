"""Helpers shared by the CLI modules: turning a library error into a clean exit with a message.

Run: used by ``distillm_edge/cli/*.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console

from distillm_edge.errors import UserError

console = Console(stderr=True)


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Print known user-facing errors as one red line and exit non-zero (no traceback)."""

    try:
        yield
    except (UserError, FileNotFoundError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
