"""Token-limit truncation: context cut first, then the answer; the question is kept; counts.

Uses a word-level tokenizer (one token per word) so counts are exact; one slow test checks the
real SmolLM2 tokenizer.

Run: ``pytest tests/data/test_truncate.py``.
"""

from __future__ import annotations

import random

import pytest

from distillm_edge.data.records import Record
from distillm_edge.data.report import Report
from distillm_edge.data.truncate import MIN_RESPONSE_TOKENS, TruncationStats, plan, token_bound, truncate


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def rec(i, q, c, a):
    return Record(f"t:{i}", q, c, a, "t")


def run(items, tokenizer, max_tokens):
    stats = TruncationStats(max_tokens)
    report = Report()
    out = list(truncate(items, tokenizer, max_tokens, report, stats, batch=3))
    return out, stats, report


def test_plan_is_context_then_answer():
    assert plan((10, 20, 30), 100) == (20, 30)
    assert plan((10, 200, 30), 100) == (60, 30)
    assert plan((10, 200, 300), 100) == (0, 90)
    assert plan((100 - MIN_RESPONSE_TOKENS + 1, 0, 50), 100) is None


def test_context_cut_first_then_answer_question_kept(tiny_tokenizer):
    fits = rec(0, words(5, "q"), words(5, "c"), words(5, "a"))
    ctx = rec(1, words(10, "q"), words(200, "c"), words(30, "a"))
    ans = rec(2, words(10, "q"), words(200, "c"), words(300, "a"))
    drop = rec(3, words(95, "q"), "", words(50, "a"))
    out, stats, report = run([fits, ctx, ans, drop], tiny_tokenizer, 100)
    assert [r.id for r in out] == ["t:0", "t:1", "t:2"]
    assert out[0].input == words(5, "c")
    assert out[1].instruction == words(10, "q") and out[1].input == words(60, "c") and out[1].response == words(30, "a")
    assert out[2].instruction == words(10, "q") and out[2].input == "" and out[2].response == words(90, "a")
    assert (stats.context_truncated, stats.response_truncated, stats.dropped) == (2, 1, 1)
    assert report.removed["too_long"] == 1


def test_answer_cut_back_to_sentence_end(tiny_tokenizer):
    answer = " ".join(["Word"] * 70) + ". " + " ".join(["more"] * 60)
    (out,), stats, _ = run([rec(0, "question here", "", answer)], tiny_tokenizer, 100)
    assert out.response.endswith("Word.") and len(out.response.split()) == 70 and stats.response_truncated == 1


def test_fast_path_equals_tokenizing_everything(tiny_tokenizer):
    rng = random.Random(0)
    items = [rec(i, words(rng.randint(1, 30), "q"), words(rng.randint(0, 80), "c"), words(rng.randint(1, 80), "a")) for i in range(60)]
    copies = [Record(r.id, r.instruction, r.input, r.response, r.source) for r in items]
    fast, _, _ = run(items, tiny_tokenizer, 64)

    class NoBound:  # forces tokenization of every record through the same code path
        def __call__(self, texts, **kw):
            return tiny_tokenizer(texts, **kw)

    import distillm_edge.data.truncate as t

    original = t.token_bound
    t.token_bound = lambda text: 10**9
    try:
        slow, _, _ = run(copies, NoBound(), 64)
    finally:
        t.token_bound = original
    assert [(r.id, r.instruction, r.input, r.response) for r in fast] == [(r.id, r.instruction, r.input, r.response) for r in slow]


def test_token_bound_is_an_upper_bound(tiny_tokenizer):
    for text in ["", "a", "ab cd", "x" * 50, "é ü 漢字", "  spaced   out  "]:
        assert len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"]) <= token_bound(text)


@pytest.mark.slow
def test_real_smollm2_tokenizer_bound_and_truncation():
    from distillm_edge.data.pipeline import load_student_tokenizer

    tok = load_student_tokenizer("smollm2-135m-instruct")
    samples = ["Hypertension is a risk factor for stroke.", "ÄÖÜ – 漢字 🙂 mg/dL", "  leading spaces\n\nand newlines  "]
    for text in samples:
        assert len(tok(text, add_special_tokens=False)["input_ids"]) <= token_bound(text)
    long = rec(0, "What is the context about?", "The heart pumps blood. " * 400, "It is about the heart.")
    (out,), stats, _ = run([long], tok, 256)
    n = sum(len(tok(x, add_special_tokens=False)["input_ids"]) for x in (out.instruction, out.input, out.response))
    assert n <= 256 and stats.context_truncated == 1 and out.response == "It is about the heart."
