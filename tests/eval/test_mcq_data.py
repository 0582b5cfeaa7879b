"""Benchmark loaders on the real ``../shared/data`` files and on broken copies (errors name file and line).

Run: ``pytest tests/eval/test_mcq_data.py``.
"""

from __future__ import annotations

import json

import pytest

from distillm_edge.errors import UserError
from distillm_edge.eval import mcq_data


def test_mmlu_real_splits(shared_data):
    sizes = {s: len(mcq_data.load_mmlu(s, "val", shared_data / "mmlu").items) for s in mcq_data.MMLU_MEDICAL}
    assert sizes == {"anatomy": 14, "clinical_knowledge": 29, "college_biology": 16, "college_medicine": 22,
                     "medical_genetics": 11, "nutrition": 33, "professional_medicine": 31, "virology": 18}
    dev = mcq_data.load_mmlu("anatomy", "dev", shared_data / "mmlu")
    assert len(dev.items) == 5 and len(dev.sha256) == 64
    first = dev.items[0]
    assert first.question == "What is the embryological origin of the hyoid bone?"
    assert first.options[3] == "The second and third pharyngeal arches" and first.answer == 3
    assert first.id == "anatomy_dev.csv:1"


def test_medqa_medmcqa_pubmedqa_real(shared_data):
    medqa = mcq_data.load_medqa(shared_data / "medqa" / "US_4options_dev.jsonl")
    assert len(medqa.items) == 1272 and medqa.items[0].options[medqa.items[0].answer] == "Ceftriaxone"
    medmcqa = mcq_data.load_medmcqa(shared_data / "medmcqa" / "dev.jsonl")
    assert len(medmcqa.items) == 4183
    first = json.loads((shared_data / "medmcqa" / "dev.jsonl").open().readline())
    assert medmcqa.items[0].answer == first["cop"] - 1  # 1-based cop
    pubmedqa = mcq_data.load_pubmedqa(shared_data / "pubmedqa" / "pqal_dev.json")
    assert len(pubmedqa.items) == 500 and pubmedqa.items[0].options == ("yes", "no", "maybe")
    assert pubmedqa.items[0].context and "\n" in pubmedqa.items[0].context


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_mmlu_bad_rows_name_file_and_line(tmp_path):
    good = 'q1,a,b,c,d,A\n"multi\nline q",a,b,c,d,B\n'
    _write(tmp_path / "val" / "anatomy_val.csv", good + "q3,a,b,c,D\n")
    with pytest.raises(UserError, match=r"anatomy_val.csv:4: expected 6 fields"):
        mcq_data.load_mmlu("anatomy", "val", tmp_path)
    _write(tmp_path / "val" / "anatomy_val.csv", good + "q3,a,b,c,d,E\n")
    with pytest.raises(UserError, match=r"anatomy_val.csv:4: answer must be one of A, B, C, D"):
        mcq_data.load_mmlu("anatomy", "val", tmp_path)
    _write(tmp_path / "val" / "anatomy_val.csv", "\n")
    with pytest.raises(UserError, match="anatomy_val.csv: no rows"):
        mcq_data.load_mmlu("anatomy", "val", tmp_path)
    with pytest.raises(UserError, match="virology_val.csv: MMLU file not found"):
        mcq_data.load_mmlu("virology", "val", tmp_path)
    with pytest.raises(UserError, match="not one of the medical subjects"):
        mcq_data.load_mmlu("astronomy", "val", tmp_path)
    _write(tmp_path / "val" / "anatomy_val.csv", good)
    items = mcq_data.load_mmlu("anatomy", "val", tmp_path).items
    assert [i.id for i in items] == ["anatomy_val.csv:1", "anatomy_val.csv:2"] and items[1].question == "multi\nline q"


def test_jsonl_and_json_errors(tmp_path):
    row = {"question": "q", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "B"}
    path = _write(tmp_path / "medqa.jsonl", json.dumps(row) + "\n\n{not json\n")
    with pytest.raises(UserError, match=r"medqa.jsonl:3: not valid JSON"):
        mcq_data.load_medqa(path)
    path = _write(tmp_path / "medqa.jsonl", json.dumps({**row, "answer_idx": "E"}) + "\n")
    with pytest.raises(UserError, match=r"medqa.jsonl:1: 'answer_idx' must be one of"):
        mcq_data.load_medqa(path)
    path = _write(tmp_path / "medqa.jsonl", json.dumps({k: v for k, v in row.items() if k != "question"}) + "\n")
    with pytest.raises(UserError, match=r"medqa.jsonl:1: missing field 'question'"):
        mcq_data.load_medqa(path)
    mrow = {"question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 0}
    path = _write(tmp_path / "medmcqa.jsonl", json.dumps({**mrow, "cop": 4}) + "\n" + json.dumps(mrow) + "\n")
    with pytest.raises(UserError, match=r"medmcqa.jsonl:2: 'cop' must be an integer 1..4 \(1-based\)"):
        mcq_data.load_medmcqa(path)
    path = _write(tmp_path / "pubmedqa.json", '{"1": {"QUESTION": "q", "CONTEXTS": ["c"],\n "final_decision": "perhaps"}}')
    with pytest.raises(UserError, match=r"pubmedqa.json: entry '1': 'final_decision' must be yes, no or maybe"):
        mcq_data.load_pubmedqa(path)
    path = _write(tmp_path / "pubmedqa.json", '{"1": {"QUESTION": "q",\n "CONTEXTS": ["c"],,}}')
    with pytest.raises(UserError, match=r"pubmedqa.json:2: not valid JSON"):
        mcq_data.load_pubmedqa(path)
    path = _write(tmp_path / "empty.jsonl", "\n")
    with pytest.raises(UserError, match="empty.jsonl: no rows"):
        mcq_data.load_medqa(path)


def test_hub_fallback_is_refused_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="Pass --data-dir"):
        mcq_data.load_mmlu("anatomy", "val", None)
