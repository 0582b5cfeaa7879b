"""Abbreviation expansion: unambiguous expanded once, ambiguous left, both table layouts load.

Run: ``pytest tests/data/test_abbrev.py``.
"""

from __future__ import annotations

import pytest

from distillm_edge.data.abbrev import AbbreviationTable, Expander, load_tables
from distillm_edge.data.records import Record
from distillm_edge.errors import UserError


def rec(instruction, response="", input=""):
    return Record("t:1", instruction, input, response, "t")


def table(tmp_path, rows: str, header="abbreviation\texpansion\tsource\tfrequency") -> AbbreviationTable:
    path = tmp_path / "t.tsv"
    path.write_text(header + "\n" + rows, encoding="utf-8")
    return AbbreviationTable().load(path)


def test_unambiguous_expanded_first_occurrence_only(tmp_path):
    ex = Expander(table(tmp_path, "COPD\tchronic obstructive pulmonary disease\tx\t\n"))
    r = ex.expand(rec("Is COPD curable?", "COPD is treatable, not curable."))
    assert r.instruction == "Is chronic obstructive pulmonary disease (COPD) curable?"
    assert r.response == "COPD is treatable, not curable."
    assert ex.summary()["expanded_by_abbreviation"] == {"COPD": 1}


def test_ambiguous_left_unless_context_decides(tmp_path):
    ex = Expander(table(tmp_path, "PE\tpulmonary embolism\tx\t\nPE\tphysical examination\tx\t\n"))
    plain = ex.expand(rec("What does PE show here?"))
    assert plain.instruction == "What does PE show here?"
    assert ex.summary()["ambiguous_by_abbreviation"] == {"PE": 1}
    ctx = ex.expand(rec("Sudden dyspnea after a long flight: is PE likely?", "An embolism blocks a pulmonary artery."))
    assert ctx.instruction.startswith("Sudden dyspnea after a long flight: is pulmonary embolism (PE) likely?")


def test_defined_roman_numerals_and_caps_words_left_alone(tmp_path):
    ex = Expander(table(tmp_path, "IV\tintravenous\tx\t\nNO\tnitric oxide\tx\t\nMI\tmyocardial infarction\tx\t\n"))
    r = ex.expand(rec("Type IV collagen? NO. Myocardial infarction (MI) is covered; MI again."))
    assert r.instruction == "Type IV collagen? NO. Myocardial infarction (MI) is covered; MI again."
    assert ex.summary()["already_defined"] == 1


def test_medal_layout_variants(tmp_path):
    t = table(tmp_path, "BP\tBP:15|bp:1\tblood pressure\nBP\tBP:9\tbacterial pneumonia\n", header="PREFERRED_AB\tVARIANT_AB\tEXPANSION")
    assert set(t.senses["BP"]) == {"blood pressure", "bacterial pneumonia"} and "bp" in t.senses


def test_unknown_table_header_is_an_error(tmp_path):
    with pytest.raises(UserError, match=r"t\.tsv:1: unknown abbreviation table header"):
        table(tmp_path, "x\ty\n", header="foo\tbar")


def test_real_tables_make_common_abbreviations_ambiguous(shared_data):
    t = load_tables([shared_data / "abbrev/medal_valid_adam.txt", shared_data / "abbrev/clinical_abbreviations_unified.tsv"])
    assert len(t.senses["COPD"]) == 1 and len(t.senses["BP"]) > 5
    ex = Expander(t)
    r = ex.expand(rec("Patient with COPD and BP 180/100.", "Check DKA risk."))
    assert "chronic obstructive pulmonary disease (COPD)" in r.instruction and "BP 180/100" in r.instruction
    assert "diabetic ketoacidosis (DKA)" in r.response
