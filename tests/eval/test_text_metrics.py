"""ROUGE/BLEU wrappers (sanity: identical, disjoint, partial), perplexity and next-token accuracy.

Run: ``pytest tests/eval/test_text_metrics.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from distillm_edge.eval import text_metrics


def test_rouge_and_bleu_identical_disjoint_partial():
    refs = ["the patient has high blood pressure and headaches", "insulin lowers blood glucose"]
    same = text_metrics.rouge(refs, refs)
    assert all(v == pytest.approx(100.0) for v in same.values())
    assert text_metrics.bleu(refs, refs) == {"bleu1": pytest.approx(100.0), "bleu4": pytest.approx(100.0)}
    other = ["zebra quantum violin", "purple mountain xylophone"]
    assert all(v == 0.0 for v in text_metrics.rouge(other, refs).values())
    assert text_metrics.bleu(other, refs)["bleu4"] == 0.0
    partial = text_metrics.rouge(["the patient has high blood pressure"], [refs[0]])
    # 6 of 6 predicted unigrams match, 6 of 8 reference unigrams: F1 = 2 * 1 * 0.75 / 1.75
    assert partial["rouge1"] == pytest.approx(100 * 2 * 0.75 / 1.75)
    with pytest.raises(ValueError):
        text_metrics.rouge([], [])


def test_perplexity_and_next_token_accuracy():
    uniform = [np.full(5, -math.log(50.0)), np.full(3, -math.log(50.0))]
    assert text_metrics.perplexity(uniform) == pytest.approx(50.0)
    # token-weighted, not a mean of per-sequence perplexities
    mixed = [np.array([0.0]), np.array([-1.0, -1.0, -1.0])]
    assert text_metrics.perplexity(mixed) == pytest.approx(math.exp(3 / 4))
    assert text_metrics.next_token_accuracy([np.array([True, False]), np.array([True])]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        text_metrics.perplexity([np.array([])])
