"""CLI for ``distillm-edge teachers ...``: commands that study a teacher before it teaches.

    distillm-edge teachers quantization-cost --teacher gemma-3-270m --data builtin --quant nf4,int8

Each command parses its options into its frozen config and calls one ``run``; a new command is one
more ``@teachers_app.command`` function here.

Test: ``pytest tests/teachers``.
"""

from __future__ import annotations

import typer

from distillm_edge.cli.common import friendly_errors

teachers_app = typer.Typer(help="Study a teacher before it teaches (quantization cost, ...).", no_args_is_help=True)


@teachers_app.command("quantization-cost")
def quantization_cost(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Model spec: embedded name, checkpoint dir, .gguf or Hub id."),
    data: str = typer.Option("builtin", "--data", "-d", help="A prepared dataset dir (data prepare --out), or builtin."),
    split: str = typer.Option("valid", "--split", help="Which split of --data to score."),
    quant: str = typer.Option("nf4,int8", "--quant", "-q", help="Comma-separated modes: nf4, int8, bf16."),
    dtype: str = typer.Option("float32", "--dtype", help="Precision of the full-precision reference."),
    max_examples: int = typer.Option(64, "--max-examples", help="Held-out examples to score."),
    max_length: int = typer.Option(256, "--max-length", help="Tokens per example (as the train recipe's max_length)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)."),
    out: str = typer.Option(None, "--out", "-o", help="Also write the report as JSON to this file."),
) -> None:
    """Mean KL(full || quantized) and top-1 agreement of a teacher in NF4 / int8 on held-out data."""
    with friendly_errors():
        from distillm_edge.teachers.quantization_cost import QuantizationCostConfig, run

        modes = tuple(q.strip() for q in quant.split(",") if q.strip())
        run(QuantizationCostConfig(teacher=teacher, data=data, split=split, quant=modes, dtype=dtype,
                                   max_examples=max_examples, max_length=max_length, device=device, threads=threads,
                                   out=out))


def register(app: typer.Typer) -> None:
    """Add the ``teachers`` group to the root app."""
    app.add_typer(teachers_app, name="teachers")
