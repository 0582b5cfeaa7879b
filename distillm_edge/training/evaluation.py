"""Held-out evaluation around a training run, and the probe that helps choose a student.

- :func:`evaluate_before`: the untrained student's held-out scores, measured in setup (no copy
  of the student is kept for the end);
- :func:`evaluate_run`: the before/after table on the held-out examples (``report.md``, the
  ``eval`` event in ``metrics.jsonl``, printed at the end of ``distillm-edge train``);
- :func:`evaluate_real`: after training, student and teacher perplexity on real records the run
  never trained on (``real_eval``: e.g. the medalpaca items in ``../shared/data``), and their
  ratio student/teacher, for the teachers that share the student's tokenizer;
- :func:`probe`: ``distillm-edge train --probe-layers``: the initial held-out perplexity of
  ``student.model`` and of several layer selections of it.

The scoring itself (perplexity, KL to each teacher, gap closed) is in ``report.py``.
Test: ``pytest tests/training/test_trainer.py -k "learns or probe"``,
``pytest tests/training/test_integration_defaults.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from distillm_edge.errors import UserError
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


def real_eval_path(spec: str) -> Path | None:
    """``real_eval`` as an existing file: as given (from the working directory), else from the repository's parent."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if not path.is_absolute():
        repo = Path(__file__).resolve().parents[2]
        for base in (repo, repo.parent):
            if (base / path).is_file():
                return base / path
    return None


def real_records(path: Path, n: int) -> list[dict]:
    """The last ``n`` records of a JSON list / JSONL file, as trainer records (``output`` read as ``response``)."""
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
    except json.JSONDecodeError as exc:
        raise UserError(f"real_eval {path}: not JSON or JSONL ({exc}); give a file of {{instruction, input, output}} "
                        "records or set real_eval: null.") from None
    out, start = [], max(0, len(rows) - n)
    for i, row in enumerate(rows[start:] if n else [], start=start):
        response = row.get("response", row.get("output")) if isinstance(row, dict) else None
        if not response or not row.get("instruction"):
            raise UserError(f"real_eval {path}: record {i} has no instruction and output/response.")
        out.append({"id": f"real-{i}", "instruction": str(row["instruction"]), "input": str(row.get("input") or ""),
                    "response": str(response)})
    return out


def evaluate_real(r: Run, student) -> dict | None:
    """Perplexity of the student and each teacher on ``real_eval`` records (None when it is unset or absent)."""
    cfg = r.cfg
    if not cfg.real_eval or not cfg.real_eval_examples:
        return None
    path = real_eval_path(cfg.real_eval)
    if path is None:
        r.log.say(f"[yellow]real_eval {cfg.real_eval}: not found; the generalization check is skipped.[/]")
        return None
    records = real_records(path, cfg.real_eval_examples)
    # teachers with the student's tokenizer only: their perplexity is per the same tokens (a ratio means something),
    # and another-tokenizer teacher's full-vocabulary pass (Gemma-3: 262k) would cost more than the rest of the check
    teachers = [t for t in r.teachers if t.same_tokenizer and t.cache is None]  # (a cache holds the run's data only)
    examples, _ = encode_records(records, r.tokenizer, {}, cfg.max_length, train_on_prompt=cfg.train_on_prompt)
    if not examples:
        r.log.say(f"[yellow]real_eval {path}: no usable record within max_length; skipped.[/]")
        return None
    started = time.perf_counter()
    with r.log.task(f"generalization check ({path.name})", len(examples)) as advance:
        scores = evaluate({"student": student}, teachers, examples, pad_id(r.tokenizer), progress=advance)
    s_ppl = scores["student"].perplexity
    out = {"data": str(path), "examples": len(examples), "student_tokens": scores["student"].student_tokens,
           "student_perplexity": s_ppl, "teachers": {}, "seconds": time.perf_counter() - started}
    lines = [f"Generalization: {len(examples)} records of {path} the run never trained on "
             f"({out['student_tokens']} response tokens): student perplexity {s_ppl:.2f}"]
    for t in teachers:
        t_ppl = scores[t.name].perplexity
        out["teachers"][t.name] = {"perplexity": t_ppl, "ratio": s_ppl / t_ppl, "same_tokenizer": True}
        lines.append(f"  {t.name}: perplexity {t_ppl:.2f}, student/teacher {s_ppl / t_ppl:.2f}x")
    skipped = [t.name for t in r.teachers if not t.same_tokenizer]
    if skipped:
        lines.append(f"  (not scored: {', '.join(skipped)}, another tokenizer: its perplexity is not per the same tokens)")
    cached = [t.name for t in r.teachers if t.same_tokenizer and t.cache is not None]
    if cached:
        lines.append(f"  (not available: {', '.join(cached)}, cached teachers: their caches hold the run's data only)")
    text = "\n".join(lines)
    report = r.run_dir / "report.md"
    previous = report.read_text(encoding="utf-8") if report.is_file() else ""
    atomic_write_text(report, previous + f"\n## Generalization (real_eval)\n\n{text}\n")
    r.log.event("real_eval", out)
    r.log.result(text)
    return out


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
