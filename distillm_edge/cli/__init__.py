"""The ``distillm-edge`` command line: parses options and calls one ``run(cfg)`` per verb.

Each verb lives in its own module here (``cli/data.py``, ``cli/train.py``, ...) and registers its
commands with :func:`register`. No logic lives in this layer: a command turns its options (and an
optional ``--config file.yaml``) into the verb's frozen config dataclass and calls its ``run``.
Heavy libraries (torch, transformers) are imported inside commands so ``--help`` stays fast.

Run: ``distillm-edge --help``.
"""

from __future__ import annotations

import typer

from distillm_edge import __version__
from distillm_edge.cli import (
    audit,
    bench,
    chat,
    data,
    eval,
    export,
    models,
    redflags,
    review,
    serve,
    teachers,
    train,
)

app = typer.Typer(
    name="distillm-edge",
    help="Distil medical language models into small students that run on a clinician's laptop.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"distillm-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Distil medical language models into small students that run on a clinician's laptop."""


for _module in (models, data, train, eval, export, bench, chat, redflags, audit, review, teachers, serve):
    _module.register(app)


def main() -> None:
    app()
