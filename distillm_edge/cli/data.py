"""CLI for ``distillm-edge data prepare``: options (and ``--config file.yaml``) → PrepareConfig → run.

Options given on the command line override the YAML file; the YAML keys are the
:class:`~distillm_edge.data.PrepareConfig` field names (``inputs``, ``out``, ``max_tokens`` ...).
With no ``--input`` the built-in medical QA corpus is prepared; the default ``--out`` is
``runs/data``.

Run: ``distillm-edge data prepare --help``. Test: ``pytest tests/data/test_cli.py``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from distillm_edge.cli.common import console, friendly_errors
from distillm_edge.errors import UserError

data_app = typer.Typer(help="Prepare medical training data.", no_args_is_help=True)


def parse_columns(text: str | None) -> dict[str, str] | None:
    """``"instruction=Q,response=A"`` → ``{"instruction": "Q", "response": "A"}``."""
    if not text:
        return None
    out: dict[str, str] = {}
    for part in text.split(","):
        field, sep, column = part.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise UserError(f"--columns {text}: expected FIELD=COLUMN pairs separated by commas, e.g. instruction=question,response=answer.")
        out[field.strip()] = column.strip()
    return out


@data_app.command("prepare")
def prepare(
    inputs: list[str] = typer.Option(None, "--input", "-i", help="Data file, folder or Hub id (repeatable). Default: the built-in medical QA corpus."),
    decontaminate: list[str] = typer.Option(None, "--decontaminate", help="Benchmark test file or folder to isolate from training (repeatable)."),
    out: str = typer.Option(None, "--out", "-o", help="Output folder (default runs/data)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out."),
    valid_fraction: float = typer.Option(None, "--valid-fraction", help="Share of records in the valid split (default 0.1)."),
    seed: int = typer.Option(None, "--seed", help="Seed of the train/valid split (default 0)."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Token limit per record (default 1024; 0 = no truncation)."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Student model whose tokenizer counts tokens (default smollm2-135m-instruct)."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first malformed record instead of skipping and counting it."),
    columns: str = typer.Option(None, "--columns", help="Column mapping for generic files, e.g. instruction=Q,response=A,input=ctx,id=uid."),
    near_threshold: float = typer.Option(None, "--near-threshold", help="MinHash Jaccard threshold for near duplicates (default 0.8)."),
    shingle_size: int = typer.Option(None, "--shingle-size", help="Words per shingle for near duplicates (default 5)."),
    ngram: int = typer.Option(None, "--ngram", help="Words per n-gram for decontamination (default 13)."),
    expand_abbreviations: bool = typer.Option(False, "--expand-abbreviations", help="Expand unambiguous abbreviations (built-in table)."),
    abbrev: list[str] = typer.Option(None, "--abbrev", help="Extra abbreviation table (TSV, MeDAL or clinical-inventory layout); implies --expand-abbreviations."),
    workers: int = typer.Option(None, "--workers", help="Worker processes for per-record work (default -1 = cores - 1, at most 4; 0 = none)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    config: Path = typer.Option(None, "--config", help="YAML file with PrepareConfig fields; options override it."),
) -> None:
    """Read, clean, deduplicate, decontaminate, tag and truncate medical QA data into a DatasetDict."""
    with friendly_errors():
        from distillm_edge.config import deep_merge, from_mapping, load_yaml
        from distillm_edge.data.pipeline import PrepareConfig, run

        given = {
            "inputs": list(inputs) if inputs else None,
            "decontaminate": list(decontaminate) if decontaminate else None,
            "out": out,
            "overwrite": overwrite or None,
            "valid_fraction": valid_fraction,
            "seed": seed,
            "max_tokens": max_tokens,
            "tokenizer": tokenizer,
            "strict": strict or None,
            "columns": parse_columns(columns),
            "near_threshold": near_threshold,
            "shingle_size": shingle_size,
            "ngram": ngram,
            "expand_abbreviations": expand_abbreviations or None,
            "abbrev": list(abbrev) if abbrev else None,
            "workers": workers,
            "progress": False if no_progress else None,
        }
        base = load_yaml(config) if config else {}
        cfg = from_mapping(PrepareConfig, deep_merge(base, {k: v for k, v in given.items() if v is not None}), where=str(config or "options"))
        stats = run(cfg)
    final = stats["final"]
    removed = ", ".join(f"{stage} {n:,}" for stage, n in stats["removed"].items())
    console.print(f"read {stats['read']['total']:,} records; removed: {removed}")
    trunc = stats["truncation"]
    if trunc["max_tokens"]:
        console.print(f"truncated to {trunc['max_tokens']} tokens: {trunc['context_truncated']:,} contexts, {trunc['response_truncated']:,} responses")
    console.print(
        f"[green]wrote[/] {final['total']:,} records ({final['splits'].get('train', 0):,} train / "
        f"{final['splits'].get('valid', 0):,} valid) to {stats['out']} in {stats['seconds']:.1f} s "
        "(stats.json, DATA_CARD.md, removals.jsonl)"
    )


def register(app: typer.Typer) -> None:
    """Add ``data`` (with ``prepare``) to the root app."""
    app.add_typer(data_app, name="data")
