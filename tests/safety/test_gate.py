"""The clinician gate: active red flags in the question or the draft block one-key approval.

Run: ``pytest tests/safety/test_gate.py -q``.
"""

from __future__ import annotations

import pytest

from distillm_edge.safety import assess, load_rules


@pytest.fixture(scope="module")
def rules():
    return load_rules()


def test_question_red_flag_requires_ack(rules):
    a = assess(rules, "My dad has crushing chest pain going down his left arm", "Rest and drink water.")
    assert a.requires_ack
    assert [h.source for h in a.red_flags] == ["question"]
    assert a.red_flags[0].rule_id == "cardiac.chest_pain_radiation"


def test_draft_red_flag_requires_ack(rules):
    a = assess(rules, "What helps a mild headache?", "If you want to kill yourself, call 988.")
    assert a.requires_ack and {h.source for h in a.red_flags} == {"draft"}


def test_suppressed_only_does_not_require_ack(rules):
    a = assess(rules, "Denies chest pain. No history of stroke.", "")
    assert not a.requires_ack and a.red_flags == ()
    assert {h.suppressed for h in a.hits} == {"negated"}
    assert a.to_dict()["requires_ack"] is False


def test_benign_question_is_clear(rules):
    a = assess(rules, "How much vitamin D should an adult take?", "Most adults need 600-800 IU a day.")
    assert a.hits == () and not a.requires_ack
