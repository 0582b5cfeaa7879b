"""``review export``: a blinded, shuffled answer sheet for expert graders, and its separate key.

1. Read the questions and reference answers (``--data``: a prepared dataset directory, or a
   medalpaca/MedQuAD-style JSON / JSONL(.gz) file — the same loader as ``eval``'s ``--data``) and
   draw ``--n`` of them with ``--seed`` (the draw's order is the sheet's order).
2. Answer every question with every ``--model`` through the shared backends (one model loaded at a
   time) and ``backends.generate`` (greedy by default, so the sheet can be regenerated exactly).
3. Per question, shuffle the models behind labels A, B, ...; the sheet holds the question, the
   reference, each label's answer and empty verdict columns (more_comprehensive, accurate,
   critical_error, omissions: yes/no, plus comments). Nothing in it names a model.
4. The key (``<sheet>.key.json``, mode 0600) maps each question's labels to models and records the
   models' weight hashes, the data's hash, the settings and a hash of every answer, so ``review
   import`` can refuse a key that belongs to another sheet.

Run: ``distillm-edge review export --model student/ --model smollm2-135m-instruct --data
../shared/data/medquad/medquad_sample4k.jsonl --n 89 --out sheet.csv``.
Test: ``pytest tests/review/test_review.py``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import string
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from distillm_edge.errors import UserError
from distillm_edge.io import atomic_path, ensure_dir
from distillm_edge.review.config import VERDICTS, ReviewExportConfig, key_path_for

SHEET_COLUMNS = ("item", "label", "question", "reference", "answer", *VERDICTS, "comments")
KEY_MODE = 0o600


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def labels(k: int) -> list[str]:
    if k > len(string.ascii_uppercase):
        raise UserError(f"at most {len(string.ascii_uppercase)} models fit on one sheet (got {k}).")
    return list(string.ascii_uppercase[:k])


def draw(cfg: ReviewExportConfig):
    from distillm_edge.eval.generation import load_instructions

    items, data_sha = load_instructions(cfg.data)
    if cfg.n > len(items):
        raise UserError(f"--n {cfg.n} is more than the {len(items)} records in {cfg.data}; lower --n.")
    return random.Random(cfg.seed).sample(items, cfg.n), data_sha


def _open(spec: str, cfg: ReviewExportConfig):
    from distillm_edge.backends import open_backend
    from distillm_edge.models.sources import resolve

    backend = cfg.backend
    if backend == "auto" and resolve(spec).kind == "embedded":
        backend = "gguf"  # the embedded models ship as GGUF; llama.cpp answers fastest on a laptop
    return open_backend(spec, backend, **({"threads": cfg.threads} if cfg.threads else {}))


def answer_with(spec: str, prompts: list[str], cfg: ReviewExportConfig) -> tuple[list[str], dict]:
    """Every prompt's answer from one model, and that model's identity (id, weights hash)."""
    from distillm_edge.backends.generate import GenerationSettings, generate_text
    from distillm_edge.safety.audit import model_identity

    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                  seed=cfg.seed)
    backend = _open(spec, cfg)
    try:
        model_id, sha = model_identity(backend)
        started, answers = time.perf_counter(), []
        for i, prompt in enumerate(prompts, 1):
            ids = backend.chat_ids([{"role": "user", "content": prompt}], add_generation_prompt=True)
            answers.append(generate_text(backend, ids, settings).text.strip())
            if i == len(prompts) or i % 10 == 0:
                print(f"review export | {spec} | {i}/{len(prompts)} answers | {time.perf_counter() - started:.1f}s",
                      file=sys.stderr)
        return answers, {"spec": spec, "model_id": model_id, "sha256": sha, "backend": backend.info.backend,
                         "dtype": backend.info.dtype}
    finally:
        backend.close()


def build_sheet(items, answers: list[list[str]], seed: int) -> tuple[list[dict], list[dict]]:
    """Sheet rows (per question, the answers in label order) and the key's per-question label map."""
    rng = random.Random(f"labels:{seed}")
    names = labels(len(answers))
    rows, key_items = [], []
    for q, item in enumerate(items, 1):
        order = list(range(len(answers)))
        rng.shuffle(order)  # label names[j] shows model order[j]
        mapping = {}
        for label, m in zip(names, order):
            text = answers[m][q - 1]
            rows.append({"item": q, "label": label, "question": item.prompt, "reference": item.reference,
                         "answer": text, **{v: "" for v in VERDICTS}, "comments": ""})
            mapping[label] = {"model": m, "answer_sha256": text_sha(text)}
        key_items.append({"item": q, "source": item.id, "question_sha256": text_sha(item.prompt), "labels": mapping})
    return rows, key_items


def write_sheet(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            if path.suffix == ".csv":
                writer = csv.DictWriter(fh, fieldnames=SHEET_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
            else:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_key(path: Path, key: dict) -> None:
    ensure_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, KEY_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(key, fh, indent=1)
        fh.write("\n")
    os.chmod(tmp, KEY_MODE)
    os.replace(tmp, path)


def run(cfg: ReviewExportConfig) -> tuple[Path, Path]:
    """Write the sheet and its key; returns their paths."""
    out = Path(cfg.out)
    key_path = Path(cfg.key) if cfg.key else key_path_for(out)
    items, data_sha = draw(cfg)
    prompts = [item.prompt for item in items]
    answers, models = [], []
    for spec in cfg.models:
        text, identity = answer_with(spec, prompts, cfg)
        answers.append(text)
        models.append(identity)
    rows, key_items = build_sheet(items, answers, cfg.seed)
    write_sheet(out, rows)
    write_key(key_path, {
        "format": "distillm-edge review key v1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sheet": out.name, "data": str(cfg.data), "data_sha256": data_sha, "config": asdict(cfg),
        "models": models, "items": key_items,
    })
    print(f"review export | wrote {out} ({len(items)} questions x {len(models)} answers, blinded) and its key "
          f"{key_path} (0600, keep it away from the graders)", file=sys.stderr)
    return out, key_path
