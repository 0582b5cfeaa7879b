"""Cleaning: NFKC and whitespace normalization, removal of empty / trivially short items.

Run: ``pytest tests/data/test_clean.py``.
"""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from distillm_edge.data.clean import clean
from distillm_edge.data.records import Record, clean_text, match_words
from distillm_edge.data.report import Report


def rec(instruction: str, response: str, input: str = "") -> Record:
    return Record("t:1", instruction, input, response, "t")


def test_clean_text_nfkc_spaces_lines():
    assert clean_text("ﬁbrosis\u00a0 of\tthe  lung\u200b") == "fibrosis of the lung"
    assert clean_text("  a  \r\n\r\n\r\n\n  b \n") == "a\n\nb"
    assert clean_text("Ｈｂ　１２ g/dL") == "Hb 12 g/dL"
    assert clean_text("ok\x00\x07 text") == "ok text"


def test_match_words_casefolds_and_drops_punctuation():
    assert match_words("What is the patient's BP? (Hb-A1c)") == ["what", "is", "the", "patient", "s", "bp", "hb", "a1c"]
    assert match_words("ﬁbrosis") == ["fibrosis"]


def test_clean_removes_empty_and_trivial_and_logs_reason():
    report = Report()
    items = [
        rec("What is asthma?", "A chronic airway disease."),
        rec("   ", "Something."),
        rec("Why?", "Because."),
        rec("What is the answer?", " - "),
        rec("Which protein carries oxygen?", "Hb"),  # short but real
    ]
    kept = list(clean(items, report))
    assert [r.response for r in kept] == ["A chronic airway disease.", "Hb"]
    assert report.removed["empty_or_short"] == 3
    reasons = [e["reason"] for e in report.examples["empty_or_short"]]
    assert reasons[0] == "empty instruction" and reasons[1].startswith("instruction too short") and reasons[2].startswith("response too short")


def clean_reference(text: str) -> str:
    """Naive regex version of clean_text (the fast path skips NFKC for ASCII and uses str.split)."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\u2060\ufeff]", "", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [re.sub(r"\s+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def match_reference(text: str) -> list[str]:
    return re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", text).casefold()).split()


ALPHABET = st.sampled_from(list("ab Z9_-.,\t\n\r\x00\x0b\x1f\x7f") + ["\u00a0", "\u200b", "é", "ﬁ", "Ｈ", "\u3000", "ß", "\u2028", "İ"])


@settings(max_examples=300, deadline=None)
@given(st.lists(ALPHABET, max_size=40).map("".join))
def test_fast_paths_equal_references(text):
    assert clean_text(text) == clean_reference(text)
    assert match_words(text) == match_reference(text)
