"""Specialty and difficulty tagging: deterministic, documented features, existing labels kept.

Run: ``pytest tests/data/test_tagging.py``.
"""

from __future__ import annotations

import dataclasses

from distillm_edge.data.records import SPECIALTIES, Record
from distillm_edge.data.tagging import LEXICONS, SUBJECT_SPECIALTY, difficulty_of, specialty_of, tag


def rec(instruction, response="", input="", kind="open", subject="", question=""):
    return Record("t:1", instruction, input, response, "t", subject=subject, kind=kind, question=question)


def test_lexicons_and_hints_use_known_specialties():
    assert len(SPECIALTIES) >= 13 and SPECIALTIES[-1] == "general"
    assert set(LEXICONS) <= set(SPECIALTIES) and set(SUBJECT_SPECIALTY.values()) <= set(SPECIALTIES)


def test_specialty_examples():
    assert specialty_of(rec("What causes atrial fibrillation?", "Heart disease and hypertension.")) == "cardiology"
    assert specialty_of(rec("What is the treatment of asthma?", "Inhaled steroids.")) == "pulmonology"
    assert specialty_of(rec("Which tooth erupts first?", "The lower central incisor.", subject="Dental")) == "dentistry"
    assert specialty_of(rec("Answer this question truthfully", "x", input="What causes psoriasis plaques?")) == "dermatology"
    assert specialty_of(rec("What is the capital of France?", "Paris.")) == "general"


def test_difficulty_examples():
    assert difficulty_of(rec("What are the treatments for gout?")) == 4
    assert difficulty_of(rec("A 54-year-old man presents with chest pain. What is the mechanism?")) == 3
    assert difficulty_of(rec("How is pneumonia diagnosed?")) == 3
    assert difficulty_of(rec("Which nerve innervates the deltoid muscle?")) == 1
    assert difficulty_of(rec("x", kind="mcq", subject="Anatomy", question="The pleura is lined by?")) == 1
    assert difficulty_of(rec("What are the symptoms of anemia?")) == 2


def test_tagging_is_deterministic_and_keeps_labels():
    items = [rec("What are the symptoms of migraine?", "Headache and nausea."), rec("How is TB treated?", "RIPE for 6 months.")]
    first = [(r.specialty, r.difficulty) for r in tag([dataclasses.replace(r) for r in items])]
    second = [(r.specialty, r.difficulty) for r in tag([dataclasses.replace(r) for r in items])]
    assert first == second == [("neurology", 2), ("infectious_disease", 4)]
    labelled = dataclasses.replace(items[0], specialty="psychiatry", difficulty=1)
    assert [(r.specialty, r.difficulty) for r in tag([labelled])] == [("psychiatry", 1)]
