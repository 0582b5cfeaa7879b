"""CLI for ``distillm-edge review export`` and ``distillm-edge review import`` (expert review).

``export`` answers N sampled questions with each model and writes a blinded, shuffled sheet plus a
separate 0600 key; ``import`` reads the graded sheet and reports per-model rates of more
comprehensive / accurate / critical error / omissions with Wilson 95% intervals.

Run: ``distillm-edge review export --model runs/student --model smollm2-135m-instruct
--data ../shared/data/medquad/medquad_sample4k.jsonl --n 89 --out sheet.csv``;
``distillm-edge review import sheet.csv``.
Test: ``pytest tests/review/test_review.py``.
"""

from __future__ import annotations

import typer

from distillm_edge.cli.common import friendly_errors

review_app = typer.Typer(help="Blinded expert review of model answers.", no_args_is_help=True)


@review_app.command("export")
def export_command(
    model: list[str] = typer.Option(..., "--model", help="A model to review (repeat): embedded name, HF dir, .gguf "
                                                         "or ONNX dir."),
    data: str = typer.Option(..., "--data", help="Questions + references: a prepared dataset dir, or a medalpaca / "
                                                 "MedQuAD JSON or JSONL(.gz) file."),
    n: int = typer.Option(89, "--n", help="Questions to sample."),
    seed: int = typer.Option(0, "--seed", help="Sampling, label shuffling and generation seed."),
    out: str = typer.Option("review_sheet.csv", "--out", help="The sheet: .csv or .jsonl."),
    key: str = typer.Option(None, "--key", help="The key file (0600). [default: <out>.key.json]"),
    backend: str = typer.Option("auto", "--backend", help="auto, torch, gguf or onnx."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Answer length budget."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy (reproducible)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (with temperature > 0)."),
    threads: int = typer.Option(0, "--threads", help="CPU threads (0 = runtime default)."),
) -> None:
    """Write a blinded, shuffled answer sheet and its separate key."""
    from distillm_edge.review.config import ReviewExportConfig
    from distillm_edge.review.export import run

    with friendly_errors():
        run(ReviewExportConfig(models=tuple(model), data=data, n=n, seed=seed, out=out, key=key, backend=backend,
                               max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, threads=threads))


@review_app.command("import")
def import_command(
    sheet: str = typer.Argument(..., help="The graded sheet (.csv or .jsonl)."),
    key: str = typer.Option(None, "--key", help="The key file. [default: <sheet>.key.json]"),
    out: str = typer.Option(None, "--out", help="Also write the report as JSON."),
) -> None:
    """Report per-model verdict rates with Wilson 95% confidence intervals."""
    from distillm_edge.review.config import ReviewImportConfig
    from distillm_edge.review.verdicts import run

    with friendly_errors():
        run(ReviewImportConfig(sheet=sheet, key=key, out=out))


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
