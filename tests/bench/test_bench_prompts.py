"""Prompts of exactly N tokens from the shipped medical text, for a real tokenizer and a fake one.

Run: ``pytest tests/bench/test_bench_prompts.py``.
"""

from __future__ import annotations

import pytest

from distillm_edge.bench.prompts import STRIDE, PromptBuilder, cyclic_slice, medical_text


def test_cyclic_slice_matches_naive_repetition():
    ids = [10, 11, 12, 13, 14]
    for start in (0, 3, 7, 12):
        for n in (0, 1, 5, 13):
            naive = (ids * (2 + (start + n) // len(ids)))[start % len(ids): start % len(ids) + n]
            assert cyclic_slice(ids, start, n) == naive
    with pytest.raises(ValueError):
        cyclic_slice([], 0, 3)


def test_shipped_text_is_long_enough_for_the_default_lengths(smollm2_tokenizer):
    body = smollm2_tokenizer(medical_text(), add_special_tokens=False).input_ids
    assert len(body) > 1024 + 8 * STRIDE  # 1024-token prompts and a batch of 8 without wrapping


@pytest.mark.parametrize("n", [2, 64, 256, 1024, 5000])
def test_exact_lengths_with_the_real_tokenizer(smollm2_tokenizer, n):
    tokenize = lambda text, add_special_tokens=True: smollm2_tokenizer(  # noqa: E731
        text, add_special_tokens=add_special_tokens).input_ids
    builder = PromptBuilder(tokenize)
    prompts = [builder.prompt(n, k) for k in range(8)]
    assert all(len(p) == n for p in prompts)
    assert len({tuple(p) for p in prompts}) == 8
    assert prompts[0][: len(builder.prefix)] == builder.prefix


def test_special_prefix_is_kept_and_counted():
    def tokenize(text, add_special_tokens=True):
        return ([1] if add_special_tokens else []) + [100 + len(w) for w in text.split()]

    builder = PromptBuilder(tokenize, text="a bb ccc dddd")
    assert builder.prompt(6) == [1, 101, 102, 103, 104, 101]
    assert builder.prompt(3, k=1) == [1] + cyclic_slice(builder.body, STRIDE, 2)
    with pytest.raises(ValueError, match="no room"):
        builder.prompt(1)
