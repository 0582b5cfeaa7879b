"""Bad input never crashes a reader: it is a BadRecord (file:line, counted) or a UserError.

Fuzzed bytes and fuzzed JSON shapes are fed to every format; the pipeline lists malformed items
in stats.json, stops on the first one with --strict, and fails clearly when nothing is left.

Run: ``pytest tests/data/test_bad_input.py``.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillm_edge.data import PrepareConfig, run
from distillm_edge.data.readers import read_input
from distillm_edge.data.records import BadRecord, Record
from distillm_edge.errors import UserError

SUFFIXES = [".jsonl", ".json", ".csv", ".tsv", ".parquet", ".jsonl.gz"]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def read_or_user_error(path: Path) -> list:
    try:
        items = list(read_input(str(path)))
    except UserError as exc:
        assert str(path) in str(exc) or "--input" in str(exc)
        return []
    for item in items:
        assert isinstance(item, (Record, BadRecord))
        if isinstance(item, BadRecord):
            assert item.where.startswith(str(path)) and item.reason
    return items


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_never_crash(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(gzip.compress(data) if suffix == ".jsonl.gz" and data[:1] == b"{" else data)
        read_or_user_error(path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
KEYS = ["question", "answer", "options", "answer_idx", "opa", "opb", "opc", "opd", "cop", "exp", "qtype", "focus",
        "id", "instruction", "input", "output", "specialty", "difficulty", "subject_name", "meta_info"]


@FUZZ
@given(rows=st.lists(st.dictionaries(st.sampled_from(KEYS), json_values, min_size=1, max_size=8), min_size=1, max_size=5))
def test_fuzzed_jsonl_shapes_never_crash(rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shapes.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        items = read_or_user_error(path)
        assert len(items) in (0, len(rows))  # one item per line, or a file-level error


@FUZZ
@given(value=json_values, layout=st.sampled_from(["pubmedqa", "squad", "instruction"]))
def test_fuzzed_json_layouts_never_crash(value, layout):
    doc = {"pubmedqa": {"123": {"QUESTION": "q?", "CONTEXTS": value, "final_decision": value, "LONG_ANSWER": "x"}},
           "squad": {"data": [{"paragraphs": [{"context": "ctx", "qas": value}]}, value]},
           "instruction": [{"instruction": value, "output": "y"}, value]}[layout]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "doc.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        read_or_user_error(path)


def test_malformed_lines_are_located_and_others_kept(tmp_path):
    path = tmp_path / "medqa_like.jsonl"
    good = {"question": "Which drug blocks cell wall synthesis?", "options": {"A": "x", "B": "Ceftriaxone"}, "answer_idx": "B"}
    lines = [json.dumps(good), "{not json", json.dumps({**good, "answer_idx": "Z"}), b"\xff\xfe".decode("latin-1"), json.dumps(good)]
    path.write_bytes("\n".join(lines[:3]).encode() + b"\n\xff\xfe\n" + lines[4].encode() + b"\n")
    items = list(read_input(str(path)))
    bad = [i for i in items if isinstance(i, BadRecord)]
    assert [b.where for b in bad] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "not valid JSON" in bad[0].reason and "answer_idx 'Z'" in bad[1].reason and "UTF-8" in bad[2].reason
    assert sum(isinstance(i, Record) for i in items) == 2


def test_json_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n{"instruction": "a b c", "output": "d"},\n{"instruction": oops}\n]', encoding="utf-8")
    with pytest.raises(UserError, match=r"broken\.json:3: not valid JSON"):
        list(read_input(str(path)))


def _corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        '{"question": "What is the normal adult heart rate?", "answer": "60 to 100 beats per minute."}\n'
        "{broken\n"
        '{"question": "What is anemia in simple terms?", "answer": "Too little hemoglobin."}\n',
        encoding="utf-8",
    )
    return path


def test_pipeline_counts_and_lists_malformed(tmp_path):
    stats = run(PrepareConfig(inputs=(str(_corpus(tmp_path)),), out=str(tmp_path / "out"), max_tokens=0, progress=False))
    assert stats["removed"]["malformed"] == 1
    assert stats["malformed"]["items"][0].startswith(f"{tmp_path / 'corpus.jsonl'}:2: not valid JSON")
    assert stats["final"]["total"] == 2
    logged = [json.loads(line) for line in (tmp_path / "out" / "removals.jsonl").read_text().splitlines()]
    assert logged[0]["stage"] == "malformed" and logged[0]["where"].endswith(":2")


def test_strict_stops_at_first_malformed_and_leaves_no_output(tmp_path):
    with pytest.raises(UserError, match=r"corpus\.jsonl:2: not valid JSON.*--strict"):
        run(PrepareConfig(inputs=(str(_corpus(tmp_path)),), out=str(tmp_path / "out"), max_tokens=0, strict=True, progress=False))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_empty_result_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text('{"question": "?", "answer": ""}\n{oops\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"no records left.*read 1.*malformed 1.*empty_or_short 1"):
        run(PrepareConfig(inputs=(str(path),), out=str(tmp_path / "out"), max_tokens=0, progress=False))
    assert not (tmp_path / "out").exists()
