"""The red-flag corpus: precision and recall of the default rules stay above their thresholds.

``redflag_corpus.jsonl`` is the development set (the rules were tuned on it, so its bar is high);
``redflag_holdout.jsonl`` was written after the last tuning round and scored once; it must never be
tuned against (fold it into the corpus and write a new one instead) — its bar records the honest floor. Print the full table with ``python benchmarks/redflags_corpus.py --errors``.

Run: ``pytest tests/safety/test_corpus.py -q``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from distillm_edge.safety.evaluate import load_corpus, score
from distillm_edge.safety.redflags import load_rules

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def rules():
    return load_rules()


def test_corpus_size_and_labels(rules):
    rows = load_corpus(HERE / "redflag_corpus.jsonl")
    positives = [r for r in rows if r["expect"]]
    negatives = [r for r in rows if not r["expect"]]
    assert len(positives) >= 150 and len(negatives) >= 150
    kinds = {r["kind"] for r in negatives}
    assert {"negation", "history", "family", "lookalike"} <= kinds
    assert len({r["id"] for r in rows}) == len(rows)
    ids = {r.id for r in rules.rules}
    assert {rid for r in rows for rid in r["expect"]} == ids  # every rule has positives


@pytest.mark.parametrize("name, min_precision, min_recall", [
    ("redflag_corpus.jsonl", 0.97, 0.97),
    ("redflag_holdout.jsonl", 0.90, 0.70),
])
def test_precision_and_recall(rules, name, min_precision, min_recall):
    report = score(rules, load_corpus(HERE / name))
    errors = "\n".join(f"{e['id']}: missed={e['missed']} extra={e['extra']} :: {e['text']}" for e in report.errors)
    for view in (report.overall, report.sentences):
        assert view.precision >= min_precision, errors
        assert view.recall >= min_recall, errors


def test_score_counts_false_positives_and_negatives(rules):
    rows = [{"id": "a", "text": "I want to kill myself", "expect": []},
            {"id": "b", "text": "How do I store insulin?", "expect": ["neuro.seizure"]},
            {"id": "c", "text": "Her face is drooping", "expect": ["neuro.stroke_signs"]}]
    report = score(rules, rows)
    assert (report.overall.tp, report.overall.fp, report.overall.fn) == (1, 1, 1)
    assert report.rules["mental_health.suicidal_ideation"].precision == 0.0
    assert report.rules["neuro.seizure"].recall == 0.0
    assert [e["id"] for e in report.errors] == ["a", "b"]
