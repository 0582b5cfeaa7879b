"""Held-out evaluation around a training run, and the probe that helps choose a student.

- :func:`evaluate_before`: the untrained student's held-out scores, measured in setup (no copy
  of the student is kept for the end);
- :func:`evaluate_run`: the before/after table on the held-out examples (``report.md``, the
  ``eval`` event in ``metrics.jsonl``, printed at the end of ``distillm-edge train``);
- :func:`probe`: ``distillm-edge train --probe-layers``: the initial held-out perplexity of
  ``student.model`` and of several layer selections of it.

The scoring itself (perplexity, KL to each teacher, gap closed) is in ``report.py``.
Test: ``pytest tests/training/test_trainer.py -k "learns or probe"``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from distillm_edge.io import atomic_write_text
from distillm_edge.training.batches import encode_records, ensure_chat_template
from distillm_edge.training.config import TrainConfig
from distillm_edge.training.report import evaluate, format_table, summary
from distillm_edge.training.teachers import pad_id

if TYPE_CHECKING:
    from distillm_edge.training.trainer import Run


def evaluate_before(student, teachers, examples, pad: int, log) -> dict:
    """Held-out scores of the untrained student (and of the teachers), measured in setup.

    Scoring the student before training, instead of keeping a deep copy of it for the end, holds
    no second student on the accelerator through the run (a 1B student: ~5 GB in fp32).
    """
    with log.task("evaluating the student before training (held-out)", len(examples)) as advance:
        was_training = student.training
        scores = evaluate({"before": student.eval()}, teachers, examples, pad, progress=advance)
        student.train(was_training)
    return scores


def evaluate_run(r: Run, student) -> dict:
    """The before/after table on the held-out examples (printed, and saved as report.md)."""
    pad, examples = pad_id(r.tokenizer), r.valid_examples
    started = time.perf_counter()
    with r.log.task("evaluating (held-out)", len(examples)) as advance:
        after = evaluate({"after": student}, r.teachers, examples, pad, progress=advance)
    scores = after | {"before": r.before["before"]}
    summ = summary(scores, [t.name for t in r.teachers])
    summ["eval_seconds"] = time.perf_counter() - started
    table = format_table(summ)
    atomic_write_text(r.run_dir / "report.md", f"# Held-out evaluation\n\n{table}\n")
    r.log.event("eval", summ)
    r.log.result(table)
    return summ


def probe(cfg: TrainConfig, strategies: list[str]) -> list[tuple[str, int, float]]:
    """Print the held-out perplexity of ``student.model`` itself and of each layer selection of it.

    Uses the first ``eval_examples`` records of the held-out split, scored like the final table.
    """
    from rich.console import Console

    from distillm_edge.data import load_prepared
    from distillm_edge.models import LoadOptions, load_model, select_layers
    from distillm_edge.training.report import perplexity, probe_layers
    from distillm_edge.training.trainer import prepared_data

    console = Console(stderr=True, soft_wrap=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    for s in strategies:  # a syntax error in any of them fails before the model loads
        select_layers(10**6, s)
    source, tokenizer = load_model(cfg.student.model, LoadOptions(dtype=cfg.student.dtype), progress=False)
    ensure_chat_template(tokenizer)
    path = prepared_data(cfg, tokenizer)
    records = list(load_prepared(path)["valid"])[: cfg.eval_examples or None]
    examples, _ = encode_records(records, tokenizer, {}, cfg.max_length, train_on_prompt=cfg.train_on_prompt)
    tokens = sum(sum(e.student.counted[1:]) for e in examples)
    console.print(f"{len(examples)} held-out examples from {path} ({tokens} response tokens)")
    rows = [("(all layers)", source.config.get_text_config().num_hidden_layers, perplexity(source, examples, pad_id(tokenizer)))]
    console.print(f"{rows[0][0]:<24} {rows[0][1]:>3} layers  perplexity {rows[0][2]:>14,.1f}")
    for s in strategies:
        row = probe_layers(source, [s], examples, pad_id(tokenizer))[0]
        console.print(f"{row[0]:<24} {row[1]:>3} layers  perplexity {row[2]:>14,.1f}")
        rows.append(row)
    return rows
