"""CLI for ``distillm-edge teachers ...``: commands that study a teacher before it teaches.

    distillm-edge teachers quantization-cost --teacher gemma-3-270m --data builtin --quant nf4,int8
    distillm-edge teachers cache --teacher gemma-3-270m --data builtin --out runs/cache-gemma --top-k 64

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
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `train`: spinning OpenMP threads crawl on a shared CPU
    with friendly_errors():
        from distillm_edge.teachers.quantization_cost import QuantizationCostConfig, run

        modes = tuple(q.strip() for q in quant.split(",") if q.strip())
        run(QuantizationCostConfig(teacher=teacher, data=data, split=split, quant=modes, dtype=dtype,
                                   max_examples=max_examples, max_length=max_length, device=device, threads=threads,
                                   out=out))


@teachers_app.command("cache")
def cache(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Model spec: embedded name, checkpoint dir, .gguf or Hub id."),
    data: str = typer.Option("builtin", "--data", "-d", help="A prepared dataset dir (data prepare --out), or builtin."),
    out: str = typer.Option(..., "--out", "-o", help="Cache folder (created; an unfinished cache there is resumed)."),
    top_k: int = typer.Option(64, "--top-k", "-k", help="Teacher log-probabilities kept per token."),
    student: str = typer.Option("smollm2-135m-instruct", "--student", help="The student whose tokenizer a cross-tokenizer "
                                "teacher is aligned to (shared-vocabulary tail); 'none' to skip."),
    split: str = typer.Option("train", "--split", help="Which split(s) of --data to cache: train, or train,valid (the "
                              "trainer then scores a cached teacher on the held-out split from the cache too)."),
    max_length: int = typer.Option(1024, "--max-length", help="Teacher tokens per record (train gives 4 x max_length)."),
    temperatures: str = typer.Option("1,1.5,2,3,4,8", "--temperatures", help="Temperature grid of the tail bucket."),
    shard_size: int = typer.Option(128, "--shard-size", help="Records per shard (the unit of resume)."),
    dtype: str = typer.Option("float32", "--dtype", help="Teacher weights dtype."),
    max_examples: int = typer.Option(None, "--max-examples", help="Cache only the first N records."),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No per-shard lines."),
) -> None:
    """Run a teacher once over a prepared dataset and store its top-k log-probabilities (the logit cache)."""
    with friendly_errors():
        from distillm_edge.errors import UserError
        from distillm_edge.teachers.cache import CacheConfig, run

        try:
            temps = tuple(float(x) for x in temperatures.split(",") if x.strip())
        except ValueError:
            raise UserError(f"--temperatures {temperatures}: give numbers separated by commas, e.g. 1,1.5,2,3,4,8.") from None
        m = run(CacheConfig(teacher=teacher, data=data, out=out, top_k=top_k,
                            student=None if student.lower() == "none" else student, split=split, max_length=max_length,
                            temperatures=temps, shard_size=shard_size, dtype=dtype, max_examples=max_examples,
                            threads=threads, progress=not no_progress))
        typer.echo(f"{out}: {m['records'] - m['dropped']} records, {m['rows']:,} teacher rows, "
                   f"{m['bytes_per_row']:.0f} bytes/row ({m['raw_bytes_per_row']:.0f} uncompressed), "
                   f"{m['computed_shards']} shards computed, {m['skipped_shards']} reused, {m['seconds']:.0f} s")


def register(app: typer.Typer) -> None:
    """Add the ``teachers`` group to the root app."""
    app.add_typer(teachers_app, name="teachers")
