"""Readers on the real files in ../shared/data and on small generic files written here.

Run: ``pytest tests/data/test_readers.py``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from distillm_edge.data.readers import detect_format, expand_inputs, read_input, source_name
from distillm_edge.data.records import BadRecord, Record
from distillm_edge.errors import UserError


def records(spec, **kw) -> tuple[list[Record], list[BadRecord]]:
    items = list(read_input(str(spec), **kw))
    return [r for r in items if isinstance(r, Record)], [b for b in items if isinstance(b, BadRecord)]


REAL = [
    # path, format, expected records, source
    ("medquad/medquad_sample4k.jsonl", "medquad", 4000, "medquad"),
    ("medquad/medquad_all_with_answers.jsonl.gz", "medquad", 16335, "medquad"),
    ("pubmedqa/pqal_dev.json", "pubmedqa", 500, "pubmedqa"),
    ("medmcqa/dev.jsonl", "medmcqa", 4183, "medmcqa"),
    ("medqa/US_4options_dev.jsonl", "medqa", 1272, "medqa"),
    ("mmlu/val/anatomy_val.csv", "mmlu", 14, "mmlu"),
    ("covidqa/covid-qa-dev.json", "squad", 203, "covid-qa"),
    ("medalpaca/medical_meadow_small_train.json", "instruction", 4942, "medical_meadow_small"),
    ("chatdoctor/chatdoctor5k.json", "instruction", 5452, "chatdoctor5k"),
]


@pytest.mark.parametrize(("rel", "fmt", "count", "source"), REAL, ids=[r[1] + ":" + Path(r[0]).name for r in REAL])
def test_real_file_reads_completely(shared_data, rel, fmt, count, source):
    path = shared_data / rel
    assert detect_format(path) == fmt
    good, bad = records(path)
    assert not bad, bad[:3]
    assert len(good) == count
    first = good[0]
    assert first.source == source and first.instruction and first.response
    assert first.where.startswith(f"{path}:")
    assert all(r.id.startswith(f"{source}:") for r in good)


def test_mcq_readers_put_options_in_instruction_and_letter_in_response(shared_data):
    medqa = next(r for r in records(shared_data / "medqa/US_4options_dev.jsonl")[0])
    assert medqa.kind == "mcq" and "\n\nOptions:\nA. Gentamicin" in medqa.instruction
    assert medqa.response == "C. Ceftriaxone" and medqa.question.startswith("A 21-year-old")
    medmcqa = records(shared_data / "medmcqa/dev.jsonl")[0][1]  # cop 1 -> a, with an explanation
    assert medmcqa.response.startswith("A. The oncotic pressure") and "\n\nExplanation: " in medmcqa.response
    mmlu = records(shared_data / "mmlu/val/anatomy_val.csv")[0][0]
    assert mmlu.response == "D. Homeostasis" and mmlu.subject == "anatomy" and mmlu.id == "mmlu:anatomy_val:1"


def test_mmlu_csv_with_stray_quote_reads_every_row(shared_data):
    # college_medicine_val.csv line 6 ends an unquoted field with a '"'; csv must not swallow lines
    good, bad = records(shared_data / "mmlu/val/college_medicine_val.csv")
    assert not bad and len(good) == 22
    assert [int(r.where.rsplit(":", 1)[1]) for r in good] == list(range(1, 23))


def test_pubmedqa_keeps_long_answer_and_decision(shared_data):
    first = records(shared_data / "pubmedqa/pqal_dev.json")[0][0]
    assert first.id == "pubmedqa:10808977" and first.kind == "yesno"
    assert first.response.startswith("Yes. The effects of the intervention")
    assert first.input.startswith("Background: Telephone counseling")


def test_squad_window_keeps_answer(shared_data):
    good, _ = records(shared_data / "covidqa/covid-qa-dev.json")
    assert all(len(r.input) <= 1200 + 300 + len(r.response) + 50 for r in good)
    inside = sum(r.response in r.input for r in good)
    assert inside / len(good) > 0.97  # a few answers are not verbatim in their paper


def test_folder_expands_to_data_files_only(shared_data):
    files = expand_inputs([str(shared_data / "mmlu")])
    assert len(files) == 16 and all(f.endswith(".csv") for f in files)
    assert files == sorted(files)


# --- generic formats ---------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_generic_jsonl_recognizes_common_names_and_keeps_id(tmp_path):
    path = write(tmp_path / "mine_train.jsonl", '{"id": "q1", "prompt": "What is a fever?", "response": "A raised temperature."}\n')
    (r,), _ = records(path)
    assert (r.id, r.instruction, r.response, r.source) == ("mine:q1", "What is a fever?", "A raised temperature.", "mine")


def test_generic_alpaca_fields(tmp_path):
    path = write(tmp_path / "a.jsonl", json.dumps({"instruction": "Summarize.", "input": "Long text.", "output": "Short."}) + "\n")
    (r,), _ = records(path)
    assert (r.instruction, r.input, r.response, r.id) == ("Summarize.", "Long text.", "Short.", "a:a:1")


def test_generic_csv_and_tsv_with_column_mapping(tmp_path):
    csv_path = write(tmp_path / "qa.csv", 'uid,Q,A\n7,"What is BP, exactly?",Blood pressure.\n')
    (r,), _ = records(csv_path, columns={"instruction": "Q", "response": "A", "id": "uid"})
    assert (r.id, r.instruction, r.response) == ("qa:7", "What is BP, exactly?", "Blood pressure.")
    tsv_path = write(tmp_path / "qa.tsv", "question\tanswer\nWhat is HR?\tHeart rate.\n")
    (t,), _ = records(tsv_path)
    assert (t.instruction, t.response, t.id) == ("What is HR?", "Heart rate.", "qa:qa:2")


def test_generic_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"question": ["What is an ECG?", "What is an EEG?"], "answer": ["Heart trace.", "Brain trace."]}), path)
    good, bad = records(path)
    assert [r.response for r in good] == ["Heart trace.", "Brain trace."] and not bad


def test_generic_json_list_and_gzip_jsonl(tmp_path):
    path = write(tmp_path / "l.json", json.dumps([{"question": "Q one?", "answer": "A one."}]))
    assert records(path)[0][0].instruction == "Q one?"
    gz = tmp_path / "z.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write('{"question": "Q two?", "answer": "A two."}\n')
    assert records(gz)[0][0].response == "A two."


def test_specialty_and_difficulty_columns_are_kept_and_validated(tmp_path):
    path = write(
        tmp_path / "lab.jsonl",
        '{"question": "Q a b?", "answer": "A.", "specialty": "cardiology", "difficulty": 3}\n'
        '{"question": "Q c d?", "answer": "B.", "specialty": "astrology", "difficulty": 3}\n'
        '{"question": "Q e f?", "answer": "C.", "specialty": "general", "difficulty": 9}\n',
    )
    good, bad = records(path)
    assert [(r.specialty, r.difficulty) for r in good] == [("cardiology", 3)]
    assert "specialty 'astrology'" in bad[0].reason and bad[0].where.endswith(":2")
    assert "difficulty should be 1-4" in bad[1].reason and bad[1].where.endswith(":3")


def test_missing_column_names_column_and_file(tmp_path):
    path = write(tmp_path / "x.csv", "foo,bar\n1,2\n")
    with pytest.raises(UserError, match=r"x\.csv: no column for 'instruction'.*foo, bar.*--columns"):
        records(path)
    with pytest.raises(UserError, match=r"no column 'Q' \(from --columns instruction=Q\)"):
        records(path, columns={"instruction": "Q", "response": "bar"})


def test_unknown_format_names_the_supported_ones(tmp_path):
    path = write(tmp_path / "notes.txt", "hello")
    with pytest.raises(UserError, match=r"unknown data format.*Supported: JSONL"):
        records(path)


def test_missing_file_and_hub_offline(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        records(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        records("medalpaca/medical_meadow_wikidoc")


def test_source_name_strips_split_suffix():
    assert source_name(Path("covid-qa-train.json")) == "covid-qa"
    assert source_name(Path("medical_meadow_small_train.json")) == "medical_meadow_small"
    assert source_name(Path("x/data.jsonl.gz")) == "data"


def test_generic_rows_with_different_fields(tmp_path):
    path = write(
        tmp_path / "mixed.jsonl",
        '{"question": "What is a pulse?", "answer": "A heartbeat felt in an artery."}\n'
        '{"question": "Summarize.", "context": "Long passage.", "answer": "Short."}\n'
        '{"title": "no question here", "answer": "x"}\n',
    )
    good, bad = records(path)
    assert [r.input for r in good] == ["", "Long passage."]
    assert bad[0].where.endswith(":3") and "no column for 'instruction'" in bad[0].reason
