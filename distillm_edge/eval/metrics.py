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
  metrics such as perplexity, ECE and Brier, so > 1 always means "better than the teacher") and
  student vs baseline (difference, sign flipped for lower-is-better metrics).

Test: ``pytest tests/eval/test_metrics.py`` (each against a naive reference loop).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

LOWER_IS_BETTER = frozenset({"perplexity", "ece", "brier"})


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
