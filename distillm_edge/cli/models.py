"""CLI for ``distillm-edge models list`` and ``distillm-edge models pull NAME``.

``list`` shows the embedded models (architecture, vocab size, whether they are materialized in
the cache and how large); ``pull`` materializes one (GGUF → verified safetensors checkpoint)
so later commands load it in seconds; ``pull --verify`` re-hashes an existing copy.

Run: ``distillm-edge models list``.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from distillm_edge.cli.common import friendly_errors
from distillm_edge.errors import UserError

models_app = typer.Typer(help="List and materialize the models distillm-edge knows.", no_args_is_help=True)


def _size(path) -> str:
    total = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return f"{total / 2**20:,.0f} MiB"


@models_app.command("list")
def list_models() -> None:
    """Show the embedded models and whether each is in the cache."""
    from distillm_edge.io import home
    from distillm_edge.models import EMBEDDED, resolve
    from distillm_edge.models.sources import is_materialized

    table = Table(title=f"embedded models (cache: {home() / 'models'})")
    for col in ("name", "architecture", "vocab", "cached", "size", "description"):
        table.add_column(col)
    for name, entry in EMBEDDED.items():
        source = resolve(name)
        cached = is_materialized(source)
        table.add_row(
            name, entry.architecture, f"{entry.vocab_size:,}", "yes" if cached else "no",
            _size(source.cache_dir) if cached else "-", entry.description,
        )
    Console().print(table)


@models_app.command("pull")
def pull(
    name: str = typer.Argument(..., help="An embedded name or a local .gguf file."),
    verify: bool = typer.Option(False, "--verify", help="Re-hash the cached copy against its manifest."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if it is already cached."),
) -> None:
    """Materialize a GGUF model into the cache as a verified safetensors checkpoint."""
    from distillm_edge.models import materialize, resolve
    from distillm_edge.models.sources import verify as verify_dir

    console = Console()
    with friendly_errors():
        source = resolve(name)
        if source.kind not in ("embedded", "gguf"):
            raise UserError(f"'{name}' is not a GGUF model; only embedded names and .gguf files need pulling.")
        with console.status(f"materializing {name} (dequantize GGUF → safetensors, verify logits)"):
            path = materialize(source, progress=True, force=force)
        console.print(f"[green]ready[/] {name} → {path} ({_size(path)})")
        if verify:
            bad = verify_dir(path)
            if bad:
                raise UserError(f"{path}: files changed since they were written: {', '.join(bad)}. Run with --force.")
            console.print("[green]verified[/] every file matches its recorded sha256")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
