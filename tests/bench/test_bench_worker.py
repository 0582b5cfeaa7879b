"""One benchmark job on a fake backend, in-process: prompts, repetitions, counters, early stop.

Run: ``pytest tests/bench/test_bench_worker.py``.
"""

from __future__ import annotations

import pytest
from bench_fakes import FakeBackend, write_weights_gguf

from distillm_edge.bench.config import ModelRun
from distillm_edge.bench.worker import Job, backend_options, batch_unsupported, bench_job


def _job(**kw) -> Job:
    base = dict(run=ModelRun("fake.gguf", "gguf"), prompt_tokens=32, gen_tokens=6, repeats=2, warmup=1,
                threads=2, batch_sizes=(1, 8))
    return Job(**{**base, **kw})


def _opener(tmp_path, **fake_kw):
    weights = write_weights_gguf(tmp_path / "fake.gguf", 4096)
    made = []

    def open_fn(spec, backend, **options):
        made.append((spec, backend, options))
        made.append(FakeBackend(path=str(weights), **fake_kw))
        return made[-1]

    return open_fn, made


def test_job_runs_warmup_and_repeats_on_distinct_prompts_of_exact_length(tmp_path):
    open_fn, made = _opener(tmp_path, prefill_s_per_token=0.0002, decode_s=0.002)
    events = []
    row = bench_job(events.append, _job(), open_fn=open_fn)
    spec, backend, options = made[0]
    fake = made[1]
    assert (spec, backend) == ("fake.gguf", "gguf")
    assert options == {"threads": 2, "n_ctx": 32 + 6 + 64}
    assert len(fake.calls) == 3  # 1 warm-up + 2 timed
    assert all(len(ids) == 32 and n == 6 for ids, n in fake.calls)
    assert len({tuple(ids) for ids, _ in fake.calls}) == 3
    assert fake.closed
    totals = [e for e in events if "total" in e]  # batch steps are dropped once the backend says it cannot batch
    assert totals[-1] == {"total": 2 + 3} and sum("step" in e for e in events) == 5
    assert row["generated"] == [6, 6] and not row["stopped_early"]
    assert 0 < row["decode_tps"] <= 500 * 1.001  # sleeps never end early
    assert row["weight_bytes"] == 4096 < row["file_bytes"] and row["weight_bytes_rule"].startswith("GGUF tensor bytes")
    assert row["batch"] == {} and "one sequence" in row["batch_na"]
    assert row["llamacpp"]["decode_tps"] == pytest.approx(500)  # the fake's counters hold the planted delays
    assert len(row["llamacpp"]["counters"]) == 2
    assert row["peak_rss_mib"] >= row["rss_loaded_mib"] > 0


def test_early_eos_is_reported(tmp_path):
    open_fn, _ = _opener(tmp_path, prefill_s_per_token=0, decode_s=0.0005, eos_after=2)
    row = bench_job(lambda e: None, _job(repeats=1, warmup=0), open_fn=open_fn)
    assert row["generated"] == [3] and row["stopped_early"]


def test_backend_options_and_batch_support():
    torch_job = _job(run=ModelRun("m", "torch", dtype="bf16", quantization="nf4"))
    assert backend_options(torch_job, "torch") == {"dtype": "bfloat16", "quantization": "nf4", "threads": 2}
    assert backend_options(_job(), "onnx") == {"threads": 2}
    assert batch_unsupported("torch") == ""
    assert batch_unsupported("gguf") == batch_unsupported("onnx") == ""  # multi-sequence llama.cpp, GenAI batches
    assert "one sequence" in batch_unsupported("gguf", object()) and batch_unsupported("onnx", object())
