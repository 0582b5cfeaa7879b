"""Pure metric functions for evaluation: accuracy aggregation, calibration, retention.

- ``choice_probs``: softmax of the choices' log-likelihoods (the model's distribution restricted
  to the offered answers), used for calibration.
- ``expected_calibration_error``: top-label ECE with ``n_bins`` equal-width confidence bins
  (default 10); bin b holds confidences in (edges[b], edges[b+1]] with edges = linspace(0, 1, n+1); the first bin also holds 0.
  ECE = sum_b |B_b|/N * |accuracy(B_b) - mean confidence(B_b)|.
- ``brier_score``: multi-class Brier score, mean over items of sum_k (p_k - 1[k = gold])^2
  (0 is perfect, 2 is the worst; a uniform guess over 4 options scores 0.75).
- ``aggregate``: per-task accuracies to macro (mean of tasks) and micro (pooled items) averages.
- ``retention`` / ``improvement``: student vs teacher (ratio; inverted for lower-is-better
  metrics such as bits per byte, ECE and Brier, so > 1 always means "better than the teacher") and
  student vs baseline (difference, sign flipped for lower-is-better metrics). Per-token figures
  (:data:`PER_TOKEN`: token perplexity, next-token accuracy) depend on the tokenizer and are never
  compared across models; retention uses tokenizer-free measures (bits per byte, word perplexity,
  ROUGE/BLEU, accuracy).
- Uncertainty, lm-eval's convention: ``mean_stderr`` is lm-eval's ``mean_stderr`` (sample standard
  deviation with n - 1, over sqrt(n); what lm-eval reports as ``acc_stderr``, closed form, no
  bootstrap); ``pooled_stderr`` is the same over the items of a group pooled (micro average) and
  ``unweighted_mean_stderr`` lm-eval's formula for a macro average, sqrt(sum se_i^2) / k.
  ``ci95`` is mean ± 1.96 standard errors (normal approximation; lm-eval prints only the stderr).
  ``paired_difference``: two models on the same items, the mean per-item difference with its
  standard error and 95% interval; the difference is *within noise* when that interval holds 0.
  ``paired_total_difference`` does the same for bits per byte (per-item bits over the same bytes).

Test: ``pytest tests/eval/test_metrics.py`` (each against a naive reference loop).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

LOWER_IS_BETTER = frozenset({"perplexity", "token_perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte",
                             "ece", "brier"})
PER_TOKEN = frozenset({"token_perplexity", "next_token_accuracy"})
Z95 = 1.959963984540054  # two-sided 95% normal quantile


def choice_probs(loglik: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [n, k] log-likelihoods (float64)."""
    x = np.asarray(loglik, dtype=np.float64)
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    if pred.shape != gold.shape or pred.size == 0:
        raise ValueError(f"accuracy needs equal, non-empty shapes; got {pred.shape} and {gold.shape}")
    return float(np.mean(pred == gold))


def expected_calibration_error(probs: np.ndarray, gold: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE of [n, k] probabilities against gold indices, equal-width bins."""
    probs, gold = np.asarray(probs, dtype=np.float64), np.asarray(gold)
    if probs.ndim != 2 or len(probs) != len(gold) or len(gold) == 0 or n_bins < 1:
        raise ValueError("ECE needs [n, k] probabilities, n gold labels (n > 0) and n_bins >= 1")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == gold).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], conf, side="left")  # bin b: edges[b] < conf <= edges[b+1]
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def brier_score(probs: np.ndarray, gold: np.ndarray) -> float:
    probs, gold = np.asarray(probs, dtype=np.float64), np.asarray(gold)
    if probs.ndim != 2 or len(probs) != len(gold) or len(gold) == 0:
        raise ValueError("Brier score needs [n, k] probabilities and n gold labels (n > 0)")
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(gold)), gold] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def aggregate(per_task: Mapping[str, tuple[float, int]]) -> dict[str, float]:
    """``{task: (accuracy, n_items)}`` -> macro (unweighted mean) and micro (item-weighted) accuracy."""
    if not per_task:
        raise ValueError("nothing to aggregate")
    if any(n <= 0 for _, n in per_task.values()):
        raise ValueError("every task must have at least one item")
    accs = [a for a, _ in per_task.values()]
    total = sum(n for _, n in per_task.values())
    return {"macro": float(np.mean(accs)), "micro": float(sum(a * n for a, n in per_task.values()) / total),
            "n": int(total)}


def mean_stderr(values: np.ndarray) -> float:
    """lm-eval's ``mean_stderr``: sample std (ddof=1) / sqrt(n); 0 for a single value."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("the standard error needs at least one value")
    return float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0


def unweighted_mean_stderr(stderrs: list[float]) -> float:
    """lm-eval's stderr of an unweighted mean of k independent task means: sqrt(sum se^2) / k."""
    return float(math.sqrt(sum(se * se for se in stderrs)) / len(stderrs))


def ci95(mean: float, stderr: float, lo: float = -math.inf, hi: float = math.inf) -> list[float]:
    """[mean - 1.96 se, mean + 1.96 se], clipped to [lo, hi]."""
    return [max(lo, mean - Z95 * stderr), min(hi, mean + Z95 * stderr)]


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean of ``a - b`` over the same items, its stderr, 95% interval and whether 0 is inside it."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"a paired difference needs two equal, non-empty arrays; got {a.shape} and {b.shape}")
    d = a - b
    mean, se = float(d.mean()), mean_stderr(d)
    lo, hi = ci95(mean, se)
    return {"diff": mean, "stderr": se, "ci95": [lo, hi], "within_noise": bool(lo <= 0.0 <= hi)}


def paired_total_difference(a: np.ndarray, b: np.ndarray, denominator: float) -> dict:
    """``sum(a - b) / denominator`` for per-item totals over the same fixed units (e.g. bits over the
    same bytes: the difference in bits per byte), with its stderr sqrt(n) * sd(a - b) / denominator."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0 or denominator <= 0:
        raise ValueError("a paired total difference needs two equal, non-empty arrays and a positive denominator")
    d = a - b
    diff = float(d.sum() / denominator)
    se = float(math.sqrt(d.size) * d.std(ddof=1) / denominator) if d.size > 1 else 0.0
    lo, hi = ci95(diff, se)
    return {"diff": diff, "stderr": se, "ci95": [lo, hi], "within_noise": bool(lo <= 0.0 <= hi)}


def retention(metric: str, student: float | None, teacher: float | None) -> float | None:
    """Student / teacher (teacher / student for lower-is-better metrics); None when undefined."""
    if student is None or teacher is None:
        return None
    num, den = (teacher, student) if metric in LOWER_IS_BETTER else (student, teacher)
    if den == 0 or not math.isfinite(num) or not math.isfinite(den):
        return None
    return float(num / den)


def improvement(metric: str, student: float | None, baseline: float | None) -> float | None:
    """Student - baseline, sign flipped for lower-is-better metrics (> 0 always means better)."""
    if student is None or baseline is None:
        return None
    diff = student - baseline
    return float(-diff if metric in LOWER_IS_BETTER else diff)
