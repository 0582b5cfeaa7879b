"""`bench compare`: ratios per matching model × backend × dtype × prompt length; unmatched rows listed.

Run: ``pytest tests/bench/test_bench_compare.py``.
"""

from __future__ import annotations

import json
import math

import pytest
from bench_fakes import fake_result, fake_row
from rich.console import Console

from distillm_edge.bench.compare import compare, load_result, print_comparison, ratio
from distillm_edge.errors import UserError


def test_ratios_for_matched_rows_and_unmatched_lists():
    a = fake_result([fake_row(prompt=64, decode=100.0), fake_row(prompt=256, decode=80.0),
                     fake_row(model="/old/path/s.gguf", prompt=64, decode=10.0)])
    b = fake_result([fake_row(prompt=64, decode=150.0), fake_row(backend="onnx", dtype="int4", prompt=64),
                     fake_row(model="/new/elsewhere/s.gguf", prompt=64, decode=5.0)])
    result = compare(a, b)
    keys = [m["key"] for m in result["matched"]]
    assert keys == [("m.gguf", "gguf", "Q4_0", 64), ("s.gguf", "gguf", "Q4_0", 64)]  # paths differ, names match
    decode = result["matched"][0]["metrics"]["decode tok/s"]
    assert (decode["a"], decode["b"], decode["ratio"]) == (100.0, 150.0, 1.5)
    assert result["matched"][1]["metrics"]["decode tok/s"]["ratio"] == 0.5
    assert result["only_a"] == [("m.gguf", "gguf", "Q4_0", 256)]
    assert result["only_b"] == [("m.gguf", "onnx", "int4", 64)]


def test_ratio_edge_cases():
    assert ratio(2.0, 3.0) == 1.5
    assert math.isnan(ratio(None, 3.0)) and math.isnan(ratio(0.0, 3.0)) and math.isnan(ratio(2.0, None))


def test_printed_table_names_both_runs_and_unmatched_rows():
    a = fake_result([fake_row(prompt=64, decode=100.0), fake_row(prompt=256)], cpu="Laptop A")
    b = fake_result([fake_row(prompt=64, decode=50.0)], cpu="Laptop B")
    console = Console(record=True, width=250)
    print_comparison(a, b, ("a.json", "b.json"), console)
    text = console.export_text()
    assert "Laptop A" in text and "Laptop B" in text
    assert "100.0 → 50.0 (0.50x)" in text
    assert "only in A: m.gguf gguf Q4_0 @ 256 tokens" in text


def test_bad_files_are_named(tmp_path):
    with pytest.raises(UserError, match="missing.json: no such file"):
        load_result(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="bad.json: not valid JSON"):
        load_result(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(UserError, match="other.json: not a bench result"):
        load_result(other)
