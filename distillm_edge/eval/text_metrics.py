"""Text-generation metrics: ROUGE-1/2/L (rouge-score), BLEU-1/4 (sacrebleu), perplexity, next-token accuracy.

Thin, documented wrappers so every report computes them the same way:

- ROUGE: mean F1 over pairs, Porter stemming on, scaled to 0-100 (rouge-score's ``rougeL`` is
  the sentence-level LCS variant).
- BLEU: sacrebleu corpus BLEU with its default 13a tokenizer and brevity penalty; BLEU-1 uses
  ``max_ngram_order=1``, BLEU-4 the standard 4. 0-100.
- perplexity: exp of the token-weighted mean negative log-likelihood of the reference tokens
  (a per-model figure: it depends on the tokenizer).
- next-token accuracy: share of reference tokens that were the model's argmax (teacher forcing;
  per model too).
- tokenizer-free, lm-eval's ``wikitext`` conventions over the same text for every model:
  ``bits_per_byte`` = total NLL / ln 2 / UTF-8 bytes; ``unit_perplexity`` = exp(total NLL / units)
  for byte perplexity (units = bytes) and word perplexity (units = whitespace words).

Test: ``pytest tests/eval/test_text_metrics.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def rouge_items(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """Per-pair ROUGE-1/2/L F1 (0-100)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references) or not predictions:
        raise ValueError("ROUGE needs as many predictions as references (and at least one)")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    return [{k: 100.0 * v.fmeasure for k, v in scorer.score(ref, pred).items()} for pred, ref in zip(predictions, references)]


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    items = rouge_items(predictions, references)
    return {key: sum(i[key] for i in items) / len(items) for key in ("rouge1", "rouge2", "rougeL")}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    from sacrebleu.metrics import BLEU

    if len(predictions) != len(references) or not predictions:
        raise ValueError("BLEU needs as many predictions as references (and at least one)")
    preds, refs = list(predictions), [list(references)]
    return {"bleu1": float(BLEU(max_ngram_order=1).corpus_score(preds, refs).score),
            "bleu4": float(BLEU().corpus_score(preds, refs).score)}


def perplexity(token_logprobs: Sequence[np.ndarray]) -> float:
    """exp(-sum log p / number of tokens) over all sequences together."""
    total = sum(float(np.sum(lp, dtype=np.float64)) for lp in token_logprobs)
    count = sum(len(lp) for lp in token_logprobs)
    if count == 0:
        raise ValueError("perplexity needs at least one scored token")
    return float(math.exp(-total / count))


def next_token_accuracy(greedy: Sequence[np.ndarray]) -> float:
    count = sum(len(g) for g in greedy)
    if count == 0:
        raise ValueError("next-token accuracy needs at least one scored token")
    return float(sum(int(np.sum(g)) for g in greedy) / count)


def total_nll(token_logprobs: Sequence[np.ndarray]) -> float:
    """Total negative log-likelihood (nats) of all scored tokens."""
    return -sum(float(np.sum(lp, dtype=np.float64)) for lp in token_logprobs)


def bits_per_byte(nll: float, n_bytes: int) -> float:
    """lm-eval's ``bits_per_byte``: total NLL in bits over the UTF-8 bytes of the scored text."""
    if n_bytes <= 0:
        raise ValueError("bits per byte needs at least one scored byte")
    return float(nll / n_bytes / math.log(2))


def unit_perplexity(nll: float, units: int) -> float:
    """exp(total NLL / units): lm-eval's ``byte_perplexity`` (units = bytes) or ``word_perplexity`` (words)."""
    if units <= 0:
        raise ValueError("perplexity needs at least one scored unit")
    return float(math.exp(nll / units))
