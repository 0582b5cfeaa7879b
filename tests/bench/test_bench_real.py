"""A short real `bench` run on the embedded SmolLM2: its shipped GGUF on llama.cpp and torch fp32.

Slow (loads real models in child processes; tens of seconds on 2 busy cores): 4 generated tokens,
1 warm-up, 1 timed repetition, one 32-token prompt, batch 1, 4 and 8 on torch and llama.cpp (timed once).

Run: ``pytest -m slow tests/bench/test_bench_real.py``.
"""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from distillm_edge.bench.config import BenchConfig, ModelRun
from distillm_edge.bench.run import run


@pytest.mark.slow
def test_quick_real_run_gguf_and_torch(tmp_path, smollm2_dir):
    from distillm_edge.models.sources import gguf_path, resolve

    cfg = BenchConfig(
        models=(ModelRun("smollm2-135m-instruct", "gguf"), ModelRun("smollm2-135m-instruct", "torch")),
        prompt_lengths=(32,), gen_tokens=4, repeats=1, warmup=1, threads=1, batch_repeats=1, out=tmp_path,
    )
    path = run(cfg, console=Console(file=io.StringIO()))
    result = json.loads(path.read_text())
    gguf, torch_row = result["rows"]
    assert gguf["backend"] == "gguf" and torch_row["backend"] == "torch"
    for row in (gguf, torch_row):
        assert row["generated"] == [4] or row["stopped_early"]
        assert row["decode_tps"] > 0 and row["ttft_ms"] > 0 and row["threads"] == 1
        assert row["peak_rss_mib"] > row["rss_start_mib"]
        assert 0 < row["roofline"]["share"] < 2
    assert gguf["file_bytes"] == gguf_path(resolve("smollm2-135m-instruct")).stat().st_size
    assert 0.9 * gguf["file_bytes"] < gguf["weight_bytes"] < gguf["file_bytes"]  # tensors, not metadata/vocab
    assert 0.5 < gguf["crosscheck"]["ratio"] < 1.5  # the real verdict (±10%) is in the report, not a timed test
    assert torch_row["weight_bytes"] == pytest.approx(134.5e6 * 4, rel=0.01)  # SmolLM2-135M in fp32, tied once
    assert set(torch_row["batch"]) == {"1", "4", "8"} and torch_row["batch"]["8"]["decode_tps"] > 0
    assert set(gguf["batch"]) == {"1", "4", "8"} and gguf["batch"]["8"]["decode_tps"] > 0 and not gguf["batch_na"]
    assert torch_row["batch_runs"] == {"warmup": 0, "timed": 1}
    assert (tmp_path / "report.md").is_file() and (tmp_path / "memory.png").is_file()
