"""CLI for `distillm-edge train` (registered once the verb works)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this verb's commands to the root app (none yet)."""
