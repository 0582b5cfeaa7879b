"""A whole `bench` run in-process on a fake backend: files written, derived figures, report text.

Run: ``pytest tests/bench/test_bench_run.py``.
"""

from __future__ import annotations

import functools
import json
import math

import pytest
from bench_fakes import FakeBackend, fake_result, fake_row, write_weights_gguf
from rich.console import Console

from distillm_edge.bench import run as bench_run
from distillm_edge.bench.config import BenchConfig, ModelRun
from distillm_edge.bench.report import clean, crosscheck_lines, markdown, notes, write_report
from distillm_edge.bench.worker import bench_job

BANDWIDTH = {"read_gbps": 10.0, "copy_gbps": 8.0, "bound_gbps": 10.0, "threads": 2, "buffer_mib": 256.0,
             "repeats": 7, "measured_at": "now", "load_avg": [0.0], "cache": "bw.json", "from_cache": False}


def _strict_json(path):
    def no_nan(name):
        raise AssertionError(f"{path} holds {name}, which strict JSON readers reject")

    return json.loads(path.read_text(), parse_constant=no_nan)


def test_run_writes_json_report_and_charts(tmp_path, monkeypatch):
    weights = tmp_path / "m.gguf"
    write_weights_gguf(weights, 10 * 2**20)
    monkeypatch.setattr(bench_run, "cached_bandwidth", lambda threads, key: dict(BANDWIDTH))

    def open_fn(spec, backend, **options):
        return FakeBackend(prefill_s_per_token=0.0001, decode_s=0.002, path=str(weights))

    cfg = BenchConfig(models=(ModelRun(str(weights), "gguf"),), prompt_lengths=(16, 32), gen_tokens=4,
                      repeats=1, warmup=0, threads=2, out=tmp_path / "out")
    with open(tmp_path / "progress.txt", "w") as log:
        path = bench_run.run(cfg, console=Console(file=log, width=200),
                             job_fn=functools.partial(bench_job, open_fn=open_fn), in_child=False)
    assert f"done {weights} [gguf] @ 32 tokens: TTFT" in (tmp_path / "progress.txt").read_text()
    assert path == tmp_path / "out" / "bench.json"
    for name in ("report.md", "tokens_per_s.png", "memory.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    result = _strict_json(path)
    assert [r["prompt_tokens"] for r in result["rows"]] == [16, 32]
    assert result["config"]["threads_used"] == 2 and result["machine"]["libraries"]["numpy"]
    for row in result["rows"]:
        bound = 10e9 / (10 * 2**20)
        assert row["roofline"]["bound_tps"] == pytest.approx(bound)
        assert row["roofline"]["share"] == pytest.approx(row["decode_tps"] / bound)
        assert row["crosscheck"]["llamacpp_tps"] == pytest.approx(500)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "llama.cpp cross-check" in report and "GGUF tensor bytes" in report and "| m.gguf · gguf Q4_0 | 16 |" in report


def test_crosscheck_verdicts():
    assert bench_run.crosscheck(95.0, 100.0)["passed"]
    assert bench_run.crosscheck(109.0, 100.0)["passed"]
    assert not bench_run.crosscheck(85.0, 100.0)["passed"]
    assert not bench_run.crosscheck(math.nan, 100.0)["passed"]
    assert not bench_run.crosscheck(90.0, math.nan)["passed"]


def test_report_lines_and_notes(tmp_path):
    ok = fake_row(llamacpp={"decode_tps": 100.0}, crosscheck=bench_run.crosscheck(97.0, 100.0))
    bad = fake_row(prompt=256, crosscheck=bench_run.crosscheck(80.0, 100.0), stopped_early=True, generated=[9])
    torch_row = fake_row(model="m", backend="torch", dtype="float32", batch_na="",
                         batch={"1": {"decode_tps": 30.0}, "4": {"decode_tps": 80.0}, "8": {"decode_tps": 150.0}})
    result = fake_result([ok, bad, torch_row])
    result["machine"]["load_avg_start"] = [5.0]
    lines = crosscheck_lines(result)
    assert lines[0].startswith("llama.cpp cross-check PASS") and "ratio 0.970" in lines[0]
    assert lines[1].startswith("llama.cpp cross-check FAIL")
    text = " ".join(notes(result))
    assert "busy at the start" in text and "stopped at EOS" in text and "batch throughput n/a for gguf" in text
    md = markdown(clean(result))
    assert "| m · torch float32 | 64 |" in md and "| 30.0 | 80.0 | 150.0 |" in md
    assert clean({"x": math.nan, "y": [math.inf, 1.0]}) == {"x": None, "y": [None, 1.0]}
    write_report(result, tmp_path)  # NaN-free JSON and charts from a hand-made result
    _strict_json(tmp_path / "bench.json")


def test_a_bad_model_fails_before_any_job_runs(tmp_path):
    from distillm_edge.errors import UserError

    ran = []
    cfg = BenchConfig(models=(ModelRun("smollm2-135m-instruct"), ModelRun(str(tmp_path / "missing.gguf"))),
                      out=tmp_path)
    with pytest.raises(UserError, match="missing.gguf' not found"):
        bench_run.run(cfg, job_fn=lambda emit, job: ran.append(job), in_child=False)
    assert ran == []
