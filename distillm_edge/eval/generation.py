"""Generation quality on instruction data: greedy answers scored against references.

Data (``--data PATH``): a JSON list, a JSONL (optionally ``.gz``) file, or a ``datasets``
``save_to_disk`` directory (a DatasetDict uses its ``valid``/``validation``/``test`` split).
Each record is ``question``/``answer`` (MedQuAD), ``instruction``/``input``/``output``
(medalpaca, ChatDoctor) or ``instruction``/``input``/``response`` (our prepared datasets); the
user turn is ``instruction`` + a blank line + ``input`` (when present).

For each record the prompt is the model's chat template with one user turn and a generation
prompt. We generate greedily up to ``max_new_tokens`` (stopping at EOS or an end-of-turn token)
and compute ROUGE/BLEU of the answer against the reference. With teacher forcing on the same
prompt we score the reference cut to its first ``max_ref_words`` words (cut by words, not by
tokens, so every model scores exactly the same characters whatever its tokenizer) and report,
as lm-eval's ``wikitext`` task does, bits per byte (total negative log-likelihood in bits over
the UTF-8 bytes of the scored text), byte perplexity and word perplexity (per whitespace
word): these compare across tokenizers. Token perplexity and next-token accuracy are per model
figures (they depend on the tokenizer) and are never compared across models.

Test: ``pytest tests/eval/test_generation.py``.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillm_edge.backends.base import Backend, continuation_logprobs
from distillm_edge.errors import UserError
from distillm_edge.eval import text_metrics
from distillm_edge.io import sha256_dir, sha256_file

_SPLITS = ("valid", "validation", "test")
_END_OF_TURN = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")


@dataclass(frozen=True)
class GenItem:
    id: str  # "file:line" or "dir:split:index"
    prompt: str
    reference: str


def _record(obj, where: str) -> GenItem:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}.")
    if "question" in obj and "answer" in obj:
        prompt, reference = obj["question"], obj["answer"]
    elif "instruction" in obj and ("output" in obj or "response" in obj):
        extra = obj.get("input") or ""
        prompt = f"{obj['instruction']}\n\n{extra}" if str(extra).strip() else obj["instruction"]
        reference = obj["output"] if "output" in obj else obj["response"]
    else:
        raise UserError(f"{where}: expected fields question/answer or instruction/input/output "
                        f"(or instruction/input/response); found {', '.join(sorted(obj)) or 'none'}.")
    if not isinstance(prompt, str) or not isinstance(reference, str) or not prompt.strip() or not reference.strip():
        raise UserError(f"{where}: the prompt and the reference answer must be non-empty strings.")
    return GenItem(where, prompt.strip(), reference.strip())


def load_instructions(path: str | Path, limit: int = 0) -> tuple[list[GenItem], str]:
    """Records of ``path`` (first ``limit`` if > 0) and the sha256 of what was read."""
    path = Path(path)
    if path.is_dir():
        return _load_saved(path, limit)
    if not path.is_file():
        raise UserError(f"{path}: generation data not found (--data takes a .json, .jsonl(.gz) file or a "
                        "datasets save_to_disk directory).")
    items: list[GenItem] = []
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}).") from None
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of records.")
        for i, obj in enumerate(data[: limit or None]):
            items.append(_record(obj, f"{path}: record {i}"))
    elif path.name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if limit and len(items) >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{n}: not valid JSON ({exc.msg}).") from None
                items.append(_record(obj, f"{path}:{n}"))
    else:
        raise UserError(f"{path}: unsupported file type; use .json, .jsonl, .jsonl.gz or a save_to_disk directory.")
    if not items:
        raise UserError(f"{path}: no records.")
    return items, sha256_file(path)


def _load_saved(path: Path, limit: int) -> tuple[list[GenItem], str]:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"{path}: not a datasets save_to_disk directory ({exc}).") from None
    split = ""
    if isinstance(data, datasets.DatasetDict):
        split = next((s for s in _SPLITS if s in data), "")
        if not split:
            raise UserError(f"{path}: has splits {', '.join(data)}; expected one of {', '.join(_SPLITS)}.")
        data = data[split]
    if len(data) == 0:
        raise UserError(f"{path}: the '{split or 'data'}' split is empty (prepared with --valid-fraction 0?); "
                        "prepare held-out data with --valid-fraction > 0 or pass a JSON/JSONL file with --data.")
    rows = data.select(range(min(limit, len(data)))) if limit else data
    items = [_record(dict(row), f"{path}:{split or 'data'}:{i}") for i, row in enumerate(rows)]
    return items, sha256_dir(path, ("**/*.arrow", "**/*.json"))


def stop_ids(backend: Backend) -> frozenset[int]:
    """EOS plus the chat format's end-of-turn token (base models' generation configs often omit it)."""
    extra = set()
    for marker in _END_OF_TURN:
        ids = backend.tokenize(marker, add_special_tokens=False)
        if len(ids) == 1:
            extra.add(ids[0])
    return frozenset(backend.eos_token_ids) | extra


def cut_words(text: str, max_words: int) -> str:
    """``text`` up to the end of its ``max_words``-th whitespace-separated word (spacing kept)."""
    end = None
    for k, match in enumerate(re.finditer(r"\S+", text), 1):
        end = match.end()
        if k == max_words:
            break
    return text if end is None else text[:end]


def evaluate_generation(backend: Backend, items: list[GenItem], max_new_tokens: int = 128,
                        max_ref_words: int = 200, progress: Callable[[], None] | None = None) -> dict:
    """Greedy generation + teacher-forced scoring of the references; returns metrics and samples."""
    stops = stop_ids(backend)
    predictions, samples, logprobs, greedy, n_bytes, n_words = [], [], [], [], 0, 0
    for item in items:
        prompt = backend.chat_ids([{"role": "user", "content": item.prompt}], add_generation_prompt=True)
        out = []
        for token in backend.stream(prompt, max_new_tokens):
            if token in stops:
                break
            out.append(token)
        text = backend.detokenize(out).strip()
        scored = cut_words(item.reference, max_ref_words)
        reference = backend.tokenize(scored, add_special_tokens=False)
        (lp, hit), = continuation_logprobs(backend, [(prompt, reference)])
        predictions.append(text)
        logprobs.append(lp)
        greedy.append(hit)
        n_bytes += len(scored.encode("utf-8"))
        n_words += len(scored.split())
        samples.append({"id": item.id, "prompt": item.prompt, "reference": item.reference, "prediction": text,
                        "generated_tokens": len(out), "scored_reference": scored, "reference_bytes": len(scored.encode("utf-8")),
                        "reference_tokens": len(reference), "reference_nll": round(-float(np.sum(lp, dtype=np.float64)), 5)})
        if progress is not None:
            progress()
    references = [item.reference for item in items]
    nll = text_metrics.total_nll(logprobs)
    per_item = text_metrics.rouge_items(predictions, references)
    for sample, scores in zip(samples, per_item):
        sample["rougeL"] = round(scores["rougeL"], 4)
    rouge = {key: sum(i[key] for i in per_item) / len(per_item) for key in ("rouge1", "rouge2", "rougeL")}
    metrics = {**rouge, **text_metrics.bleu(predictions, references),
               "bits_per_byte": text_metrics.bits_per_byte(nll, n_bytes),
               "byte_perplexity": text_metrics.unit_perplexity(nll, n_bytes),
               "word_perplexity": text_metrics.unit_perplexity(nll, n_words),
               "token_perplexity": text_metrics.perplexity(logprobs),
               "next_token_accuracy": 100.0 * text_metrics.next_token_accuracy(greedy), "n": len(items),
               "scored_bytes": n_bytes, "scored_words": n_words, "scored_tokens": sum(len(lp) for lp in logprobs)}
    return {"metrics": metrics, "samples": samples}
