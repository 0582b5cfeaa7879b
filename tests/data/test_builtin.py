"""The embedded medical QA corpus: size, coverage of specialties and stages, well-formedness.

Run: ``pytest tests/data/test_builtin.py``.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from distillm_edge.data import DIFFICULTY_STAGES, SPECIALTIES, builtin_corpus_path
from distillm_edge.data.readers import read_input
from distillm_edge.data.records import Record


def rows() -> list[dict]:
    return [json.loads(line) for line in builtin_corpus_path().read_text(encoding="utf-8").splitlines()]


def test_size_and_coverage():
    items = rows()
    assert len(items) >= 2000  # 336 hand-written records grown to ~2,800 (issue 12)
    per = Counter(r["specialty"] for r in items)
    assert len(per) >= 12 and min(per.values()) >= 20
    assert set(per) <= set(SPECIALTIES) - {"general"}
    for specialty in per:
        stages = Counter(r["difficulty"] for r in items if r["specialty"] == specialty)
        assert set(stages) == set(DIFFICULTY_STAGES), specialty


def test_items_are_well_formed_and_unique():
    items = rows()
    assert len({r["id"] for r in items}) == len(items)
    assert len({r["question"].casefold() for r in items}) == len(items)
    for r in items:
        assert set(r) == {"id", "specialty", "difficulty", "question", "answer"}
        assert r["question"].strip().endswith("?") or r["question"].strip().endswith(".")
        sentences = len(re.findall(r"[.!?](?:\s|$)", r["answer"]))
        assert 1 <= sentences <= 4, r["id"]


def test_reads_as_labelled_records():
    items = list(read_input(str(builtin_corpus_path())))
    assert all(isinstance(r, Record) for r in items) and len(items) == len(rows())
    first = items[0]
    assert first.source == "builtin" and first.id == "builtin:cardiology-001"
    assert first.specialty == "cardiology" and first.difficulty == 1
