"""CLI for ``distillm-edge eval``: parse options (and an optional ``--config file.yaml``) into an
``EvalConfig`` and call ``distillm_edge.eval.run.run``. Options given on the command line override
the file's keys.

Run: ``distillm-edge eval --model smollm2-135m-instruct --data-dir ../shared/data --limit 5``.
Test: ``pytest tests/eval/test_run.py`` (the CLI test).
"""

from __future__ import annotations

import typer

from distillm_edge.cli.common import friendly_errors


def eval_command(
    model: str = typer.Option(None, "--model", help="Model to evaluate: embedded name, HF dir, .gguf file or ONNX dir."),
    teacher: str = typer.Option(None, "--teacher", help="Teacher, reported side by side with retention ratios."),
    baseline: str = typer.Option(None, "--baseline", help="Undistilled student, reported with the improvement."),
    backend: str = typer.Option(None, "--backend", help="auto (from each spec), torch, gguf or onnx. [default: auto]"),
    tasks: str = typer.Option(None, "--tasks", help="Comma list of mmlu_medical,medqa,medmcqa,pubmedqa,generation. "
                                                    "[default: mmlu_medical]"),
    data_dir: str = typer.Option(None, "--data-dir", help="Benchmark folder in the layout of ../shared/data "
                                                          "(mmlu/, medqa/, medmcqa/, pubmedqa/); without it, the Hub."),
    mmlu_dir: str = typer.Option(None, "--mmlu-dir", help="MMLU folder (dev/, val/ CSVs); overrides <data-dir>/mmlu."),
    split: str = typer.Option(None, "--split", help="MMLU split to score: auto (test when the MMLU folder has test/, as lm-eval; else val), val, dev or test. [default: auto]"),
    num_fewshot: int = typer.Option(None, "--num-fewshot", help="MMLU examples from the dev split (0-5). [default: 0]"),
    limit: int = typer.Option(None, "--limit", help="First N items per task / subject / generation record (0 = all)."),
    data: str = typer.Option(None, "--data", help="Generation data: JSON/JSONL(.gz) or a save_to_disk directory."),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", help="Generation budget per answer. [default: 128]"),
    max_ref_words: int = typer.Option(None, "--max-ref-words", help="Reference words scored for bits per byte and "
                                                                    "perplexity, the same text for every model. [default: 200]"),
    ece_bins: int = typer.Option(None, "--ece-bins", help="Equal-width bins of the calibration error. [default: 10]"),
    threads: int = typer.Option(None, "--threads", help="CPU threads (0 = runtime default)."),
    seed: int = typer.Option(None, "--seed", help="Recorded in the run (scoring and greedy decoding are deterministic)."),
    out: str = typer.Option(None, "--out", help="Run directory. [default: runs/eval/<time>-<model>]"),
    config: str = typer.Option(None, "--config", help="YAML file with EvalConfig keys; options override it."),
) -> None:
    """Score a model on medical benchmarks (and its teacher / baseline side by side)."""
    from distillm_edge.config import from_mapping, load_yaml
    from distillm_edge.eval.config import EvalConfig
    from distillm_edge.eval.run import run

    with friendly_errors():
        values = load_yaml(config) if config else {}
        given = {"model": model, "teacher": teacher, "baseline": baseline, "backend": backend, "tasks": tasks,
                 "data_dir": data_dir, "mmlu_dir": mmlu_dir, "split": split, "num_fewshot": num_fewshot,
                 "limit": limit, "data": data, "max_new_tokens": max_new_tokens, "max_ref_words": max_ref_words,
                 "ece_bins": ece_bins, "threads": threads, "seed": seed, "out": out}
        values.update({k: v for k, v in given.items() if v is not None})
        if not values.get("model"):
            raise typer.BadParameter("--model is required (or a 'model' key in --config).")
        run(from_mapping(EvalConfig, values, where=config or "options"))


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
