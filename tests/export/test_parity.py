"""Parity metrics and pass/fail rules of export's verification, against naive references.

Run: ``pytest tests/export/test_parity.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from distillm_edge.backends.base import log_softmax
from distillm_edge.export.parity import (
    Parity,
    common_prefix,
    compare,
    judge,
    kl_rows,
    load_inputs,
    parted_at_tie,
    perplexity,
    reference,
    top1_matches,
    top_candidates,
)


def _rows(seed, t=5, v=11):
    return log_softmax(np.random.default_rng(seed).standard_normal((t, v)).astype(np.float32) * 3)


def test_kl_matches_naive_and_is_zero_for_identical():
    p, q = _rows(0), _rows(1)
    naive = [sum(math.exp(a) * (a - b) for a, b in zip(pr, qr)) for pr, qr in zip(p.tolist(), q.tolist())]
    np.testing.assert_allclose(kl_rows(p, q), naive, rtol=1e-5)
    np.testing.assert_array_equal(kl_rows(p, p), np.zeros(5))


def test_kl_ignores_impossible_tokens_of_the_source():
    with np.errstate(divide="ignore"):
        p = np.log(np.array([[0.5, 0.5, 0.0]]))  # -inf log-prob: contributes 0, not nan
    q = np.log(np.array([[0.25, 0.25, 0.5]]))
    assert kl_rows(p, q)[0] == pytest.approx(math.log(2))


def test_top1_prefix_and_perplexity():
    p, q = _rows(0), _rows(0).copy()
    q[2] = q[2][::-1]
    assert top1_matches(p, p).all() and top1_matches(p, q).sum() == 4
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2 and common_prefix([], [1]) == 0 and common_prefix([7], [7]) == 1
    assert perplexity([np.log([0.5, 0.5]), np.log([0.25])]) == pytest.approx(math.exp((2 * math.log(2) + math.log(4)) / 3))
    assert math.isnan(perplexity([]))


def _parity(**changes):
    base = dict(positions=100, mean_kl=0.001, max_kl=0.01, top1_agreement=0.995, greedy_identical=14, greedy_tie_parted=0, greedy_prompts=14,
                greedy_mean_prefix=64.0, greedy_min_prefix=64, max_new_tokens=64, ppl_source=10.0, ppl_artifact=10.5,
                ppl_increase=0.05, tokenizer_match=True, tokenizer_mismatches=[])
    return Parity(**{**base, **changes})


def test_judge_rules():
    assert judge(_parity(), "exact", 0.25) == []
    assert "greedy continuations differ on 1 of 14" in judge(_parity(greedy_identical=13, greedy_min_prefix=40), "exact", 0.25)[0]
    assert judge(_parity(greedy_identical=13, greedy_tie_parted=1, greedy_min_prefix=15), "exact", 0.25) == []
    assert "top-1 agreement 98.00% < 99%" in judge(_parity(top1_agreement=0.98), "exact", 0.25)[0]
    assert judge(_parity(top1_agreement=0.98, greedy_identical=3), "close", 0.25) == []
    assert "< 97%" in judge(_parity(top1_agreement=0.96), "close", 0.25)[0]
    assert judge(_parity(top1_agreement=0.5, ppl_increase=0.2), "lossy", 0.25) == []
    assert "perplexity rose +30.0%" in judge(_parity(ppl_increase=0.3), "lossy", 0.25)[0]
    assert "perplexity" in judge(_parity(ppl_increase=float("nan")), "lossy", 0.25)[0]  # nan never passes
    assert "tokenizer differs" in judge(_parity(tokenizer_match=False, tokenizer_mismatches=["x"]), "lossy", 0.25)[0]


def test_shipped_inputs_are_medical_and_non_trivial():
    inputs = load_inputs()
    assert 10 <= len(inputs.prompts) <= 20 and len(inputs.texts) >= 3
    assert all(len(t.split()) > 60 for t in inputs.texts)
    assert len(set(inputs.prompts)) == len(inputs.prompts)


def test_tie_rule_accepts_only_the_sources_near_equal_candidates():
    ids, lps = np.array([5, 9, 2]), np.log(np.array([0.40, 0.39, 0.21], dtype=np.float32))
    assert parted_at_tie((ids, lps), 9)  # 0.40 vs 0.39: gap 0.025 nats
    assert not parted_at_tie((ids, lps), 2)  # gap 0.64 nats: a real difference
    assert not parted_at_tie((ids, lps), 7) and not parted_at_tie(None, 9)
    rows = _rows(3, t=4, v=20)
    for row, (cand, cand_lps) in zip(rows, top_candidates(rows, 3)):
        assert set(cand) == set(np.argsort(row)[-3:]) and np.allclose(cand_lps, row[cand])


class _Bigram:
    """A toy backend whose next token depends on the last one only: rows of a fixed [V, V] table."""

    def __init__(self, table):
        self.table = log_softmax(np.asarray(table, dtype=np.float32))

    def chat_ids(self, messages):
        return [0]

    def tokenize(self, text):
        return [0, 1, 2]

    def next_token_logprobs(self, ids):
        return self.table[np.asarray(ids)]

    def token_logprobs(self, ids, start=1):
        rows = self.next_token_logprobs(ids)[start - 1 : -1]
        return rows[np.arange(len(rows)), np.asarray(ids[start:])]

    def stream(self, ids, max_new_tokens):
        last = ids[-1]
        for _ in range(max_new_tokens):
            last = int(self.table[last].argmax())
            yield last


def test_compare_counts_a_continuation_parting_at_a_tie_apart_from_a_real_difference():
    from distillm_edge.export.parity import ParityInputs

    inputs = ParityInputs(("p",), ("t",))
    source = np.full((4, 4), -5.0)
    source[0, 1], source[1, 2], source[2, 3], source[3, 1] = 0.0, 0.0, 0.0, 0.0
    source[1, 3] = -0.01  # after token 1, tokens 2 and 3 are (almost) tied in the source
    ref = reference(_Bigram(source), inputs, max_new_tokens=6)
    assert ref.greedy == [[1, 2, 3, 1, 2, 3]] and len(ref.greedy_top[0]) == 6
    flipped = source.copy()
    flipped[1, 3] = 0.01  # the artifact breaks the tie the other way
    p = compare(ref, _Bigram(flipped), inputs, max_new_tokens=6)
    assert (p.greedy_identical, p.greedy_tie_parted, p.greedy_min_prefix) == (0, 1, 1)
    assert judge(p, "exact", 0.25) == []
    wrong = source.copy()
    wrong[1, 0] = 1.0  # a confident different choice: not a tie
    q = compare(ref, _Bigram(wrong), inputs, max_new_tokens=6)
    assert (q.greedy_identical, q.greedy_tie_parted) == (0, 0)
    assert any("greedy continuations differ on 1 of 1" in f for f in judge(q, "exact", 0.25))
