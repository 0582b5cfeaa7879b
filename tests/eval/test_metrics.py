"""Eval metric functions against naive reference loops and edge cases.

Run: ``pytest tests/eval/test_metrics.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from distillm_edge.eval import metrics


def naive_ece(probs, gold, n_bins):
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    n = len(gold)
    total = 0.0
    for b in range(n_bins):
        members = []
        for p, g in zip(probs, gold):
            conf = max(p)
            inside = edges[b] < conf <= edges[b + 1] or (b == 0 and conf == 0.0)
            if inside:
                members.append((conf, 1.0 if list(p).index(max(p)) == g else 0.0))
        if members:
            acc = sum(c for _, c in members) / len(members)
            conf = sum(c for c, _ in members) / len(members)
            total += len(members) / n * abs(acc - conf)
    return total


def naive_brier(probs, gold):
    return sum(sum((p[k] - (1.0 if k == g else 0.0)) ** 2 for k in range(len(p))) for p, g in zip(probs, gold)) / len(gold)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_and_brier_match_naive(seed, n_bins):
    rng = np.random.default_rng(seed)
    loglik = rng.normal(size=(200, 4)) * rng.uniform(0.1, 5)
    probs = metrics.choice_probs(loglik)
    gold = rng.integers(0, 4, size=200)
    assert metrics.expected_calibration_error(probs, gold, n_bins) == pytest.approx(naive_ece(probs, gold, n_bins))
    assert metrics.brier_score(probs, gold) == pytest.approx(naive_brier(probs, gold))


def test_ece_bin_edges_and_extremes():
    # confidences exactly on an edge (0.3 of linspace) go to the lower bin, like the reference
    probs = np.array([[0.3, 0.25, 0.25, 0.2], [np.linspace(0, 1, 11)[3], 0.7 - 1e-9, 0.0, 0.0]])
    gold = np.array([0, 1])
    assert metrics.expected_calibration_error(probs, gold, 10) == pytest.approx(naive_ece(probs, gold, 10))
    perfect = np.eye(4)
    assert metrics.expected_calibration_error(perfect, np.arange(4)) == 0.0
    assert metrics.brier_score(perfect, np.arange(4)) == 0.0
    assert metrics.expected_calibration_error(perfect, np.array([1, 2, 3, 0])) == pytest.approx(1.0)
    assert metrics.brier_score(perfect, np.array([1, 2, 3, 0])) == pytest.approx(2.0)
    assert metrics.brier_score(np.full((3, 4), 0.25), np.array([0, 1, 2])) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        metrics.expected_calibration_error(np.zeros((0, 4)), np.zeros(0, int))


def test_choice_probs_is_a_stable_softmax():
    p = metrics.choice_probs(np.array([[-1000.0, -1001.0, -1002.0, -2000.0]]))
    assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0)
    assert p[0, 0] == pytest.approx(1 / (1 + math.exp(-1) + math.exp(-2)))


def test_accuracy_and_aggregation_match_naive():
    rng = np.random.default_rng(0)
    per_task, pooled_correct, pooled_n = {}, 0, 0
    for t in range(6):
        n = int(rng.integers(1, 40))
        pred, gold = rng.integers(0, 4, n), rng.integers(0, 4, n)
        acc = metrics.accuracy(pred, gold)
        correct = sum(int(p == g) for p, g in zip(pred, gold))
        assert acc == pytest.approx(correct / n)
        per_task[f"t{t}"] = (acc, n)
        pooled_correct += correct
        pooled_n += n
    agg = metrics.aggregate(per_task)
    assert agg["macro"] == pytest.approx(sum(a for a, _ in per_task.values()) / 6)
    assert agg["micro"] == pytest.approx(pooled_correct / pooled_n)
    assert agg["n"] == pooled_n
    with pytest.raises(ValueError):
        metrics.aggregate({"empty": (0.0, 0)})
    with pytest.raises(ValueError):
        metrics.accuracy(np.array([]), np.array([]))


def test_retention_and_improvement_directions():
    assert metrics.retention("acc", 30.0, 40.0) == pytest.approx(0.75)
    assert metrics.retention("perplexity", 20.0, 10.0) == pytest.approx(0.5)  # teacher / student
    assert metrics.retention("ece", 0.2, 0.1) == pytest.approx(0.5)
    assert metrics.retention("acc", 30.0, 0.0) is None
    assert metrics.retention("acc", 30.0, None) is None
    assert metrics.improvement("acc", 35.0, 30.0) == pytest.approx(5.0)
    assert metrics.improvement("perplexity", 8.0, 10.0) == pytest.approx(2.0)


def test_stderr_matches_lm_eval_and_intervals():
    from lm_eval.api.metrics import mean_stderr as lm_mean_stderr
    from lm_eval.api.metrics import pooled_sample_stderr
    from lm_eval.api.metrics import unweighted_mean_stderr as lm_unweighted

    rng = np.random.default_rng(1)
    correct = rng.integers(0, 2, 37).astype(float)
    assert metrics.mean_stderr(correct) == pytest.approx(lm_mean_stderr(list(correct)), rel=1e-12)
    tasks = [rng.integers(0, 2, n).astype(float) for n in (11, 33, 20)]
    ses = [metrics.mean_stderr(t) for t in tasks]
    assert metrics.unweighted_mean_stderr(ses) == pytest.approx(lm_unweighted(ses), rel=1e-12)
    pooled = metrics.mean_stderr(np.concatenate(tasks))  # micro average: all items pooled
    assert pooled == pytest.approx(pooled_sample_stderr(ses, [11, 33, 20]), rel=0.05)  # lm-eval's approximation
    lo, hi = metrics.ci95(0.5, 0.1)
    assert (lo, hi) == pytest.approx((0.5 - 0.196, 0.5 + 0.196), abs=1e-3)
    assert metrics.ci95(0.98, 0.05, 0.0, 1.0)[1] == 1.0


def test_paired_difference_within_noise_or_not():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 2, 40).astype(float)
    same = metrics.paired_difference(a, a)
    assert same["diff"] == 0.0 and same["within_noise"]
    b = a.copy()
    b[:2] = 1 - b[:2]  # two items differ: within noise on 40 items
    assert metrics.paired_difference(a, b)["within_noise"]
    worse = np.zeros(40)
    better = np.ones(40)
    better[:5] = 0.0
    res = metrics.paired_difference(better, worse)
    assert res["diff"] == pytest.approx(35 / 40) and not res["within_noise"]
    d = better - worse
    assert res["stderr"] == pytest.approx(np.std(d, ddof=1) / np.sqrt(40))


def test_paired_total_difference_is_the_difference_of_ratios():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(10, 50, 12), rng.uniform(10, 50, 12)
    res = metrics.paired_total_difference(a, b, 400.0)
    assert res["diff"] == pytest.approx(a.sum() / 400 - b.sum() / 400)
    assert res["stderr"] == pytest.approx(np.sqrt(12) * np.std(a - b, ddof=1) / 400)
    assert metrics.paired_total_difference(a, a, 400.0)["within_noise"]
