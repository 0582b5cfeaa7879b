"""Test-set isolation: planted benchmark questions are removed (including short MMLU questions
matched whole), other records kept; the indexed matcher equals a brute-force check.

Run: ``pytest tests/data/test_decontaminate.py``.
"""

from __future__ import annotations

import random

from distillm_edge.data.decontaminate import (
    BenchmarkIndex,
    contaminated_naive,
    decontaminate,
    load_benchmarks,
)
from distillm_edge.data.records import Record, match_words
from distillm_edge.data.report import Report

LONG_Q = (
    "A 45-year-old man has crushing retrosternal chest pain radiating to his left arm with "
    "diaphoresis and ST elevation in leads II, III and aVF on the electrocardiogram"
)


def rec(i, instruction, response="Some answer text.", input=""):
    return Record(f"t:{i}", instruction, input, response, "t")


def index_of(questions: dict[str, str], n: int = 13) -> BenchmarkIndex:
    idx = BenchmarkIndex(n)
    for bench_id, q in questions.items():
        idx.add(bench_id, q)
    return idx.finish()


def test_long_question_ngram_and_short_question_whole_match():
    idx = index_of({"b:long": LONG_Q, "b:short": "What is erythema nodosum?", "b:generic": "Which of the following statements is correct?"})
    report = Report()
    items = [
        rec(1, "Case: " + LONG_Q.upper().replace(",", " ;") + " What next?"),  # case/punctuation differ
        rec(2, "Define it.", response="Q: what is erythema nodosum? It is a panniculitis."),  # short q inside the response
        rec(3, "What is erythema multiforme?"),  # similar words, not the question
        rec(4, "Which of the following statements is correct about asthma?"),  # generic wording only
        rec(5, "Chest pain radiating to the left arm with diaphoresis is typical of myocardial infarction."),  # < 13 shared words
    ]
    kept = list(decontaminate(items, idx, report))
    assert [r.id for r in kept] == ["t:3", "t:4", "t:5"]
    matched = {e["id"]: e["matched"] for e in report.examples["decontaminated"]}
    assert matched == {"t:1": "b:long", "t:2": "b:short"}
    assert idx.too_generic == ["b:generic"]


def test_exam_boilerplate_ngrams_are_not_evidence():
    template = "Which of the following is the most likely cause of this patient's symptoms"
    idx = index_of({"b:1": "A 30-year-old woman comes to the physician because of fatigue for 3 weeks. " + template + "?"})
    other = rec(1, "A 60-year-old man has melena. " + template + "?")
    assert list(decontaminate([other], idx, Report())) == [other]


def test_matcher_equals_brute_force_on_random_corpus():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(60)] + ["the", "of", "which", "a", "b"]
    def text(lo, hi):
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(lo, hi)))

    items = {f"b:{i}": (text(2, 20), tuple(text(1, 10) for _ in range(rng.choice((0, 4))))) for i in range(30)}
    idx = BenchmarkIndex(8)
    for bench_id, (q, choices) in items.items():
        idx.add(bench_id, q, choices)
    idx.finish()
    parts = [match_words(q) + ["x"] for q, _ in items.values()] + [match_words(c) for _, cs in items.values() for c in cs]
    hits, lists = 0, []
    for _ in range(600):
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 40))]
        for _ in range(rng.choice((0, 0, 1, 2))):  # plant a stem, a choice or part of one (labels in between)
            q = rng.choice(parts)
            cut = rng.randint(0, len(q))
            pos = rng.randint(0, len(words))
            words[pos:pos] = q[: max(cut, 8)]
        expected = contaminated_naive(words, list(items.values()), 8)
        assert (idx.match(words) is not None) == expected, words
        lists.append(words)
        hits += expected
    assert 60 < hits < 540  # both outcomes are exercised
    assert idx.match_many(lists) == [idx.match(w) for w in lists]  # batched numpy prefilter == exact path


def test_real_mmlu_short_question_is_caught(shared_data):
    idx = load_benchmarks([str(shared_data / "mmlu/val")])
    assert idx.items == 174 and idx.per_file
    # "What is cardiac output?" is a 4-word clinical_knowledge question: matched as a whole string
    planted = rec(1, "Quick quiz. What is cardiac output? Explain briefly.", "Heart rate times stroke volume.")
    clean = rec(2, "How is cardiac output measured in the clinic?", "By echocardiography or thermodilution.")
    report = Report()
    assert [r.id for r in decontaminate([planted, clean], idx, report)] == ["t:2"]
    assert report.examples["decontaminated"][0]["matched"].startswith("mmlu:clinical_knowledge_val:")


def test_benchmark_formats_load(shared_data):
    idx = load_benchmarks([str(shared_data / "medqa/US_4options_dev.jsonl"), str(shared_data / "pubmedqa/pqal_dev.json"),
                           str(shared_data / "medmcqa/dev.jsonl")])
    assert idx.items == 1272 + 500 + 4183
    question = "Can tailored interventions increase mammography use among HMO women?"  # PubMedQA, < 13 words
    assert idx.match(match_words("Study: " + question))[0] == "pubmedqa:10808977"


def test_index_hashes_equal_the_scalar_reference():
    from distillm_edge.data.decontaminate import _gram_hash

    idx = index_of({"b:1": LONG_Q, "b:2": LONG_Q.replace("chest", "abdominal") + " and fever"})
    assert sorted(idx._hashes().tolist()) == sorted({_gram_hash(g) for g in idx.ngrams})
