"""The llama-bench-style table: pp<N> / tg<G> / tg<G> @ d<N> as mean ± sample sd over repetitions,
from planted per-repetition figures, and a worker run that measures the depth-0 generation.

Run: ``pytest tests/bench/test_bench_llamabench.py``.
"""

from __future__ import annotations

import math
import statistics

import pytest

from distillm_edge.bench import llamabench


def test_mean_sd_is_llama_benchs():
    mean, sd = llamabench.mean_sd([10.0, 12.0, 14.0])
    assert mean == 12.0 and sd == pytest.approx(statistics.stdev([10, 12, 14])) and sd == pytest.approx(2.0)
    assert math.isnan(llamabench.mean_sd([5.0])[1]) and math.isnan(llamabench.mean_sd([])[0])
    assert llamabench.fmt(12.0, 2.0) == "12.00 ± 2.00"


def _row(prompt, prefill, decode, depth0=()):
    return {"model": "m.gguf", "backend": "gguf", "dtype": "Q4_K_M", "threads": 2, "prompt_tokens": prompt,
            "gen_tokens": 128, "prefill_tps_runs": prefill, "decode_tps_runs": decode, "tg_depth0_runs": list(depth0)}


def test_table_rows_in_llama_bench_order():
    result = {"rows": [_row(512, [400, 420, 410], [50, 52, 51]), _row(64, [300, 310, 320], [60, 61, 62], [70, 72, 71])]}
    got = [(e["test"], e["tps"]) for e in llamabench.rows(result)]
    assert [t for t, _ in got] == ["pp64", "pp512", "tg128", "tg128 @ d64", "tg128 @ d512"]
    assert got[1][1] == (410.0, pytest.approx(10.0))
    assert got[2][1] == (71.0, pytest.approx(1.0))
    md = llamabench.markdown(result)
    assert md[0].startswith("| model") and "| pp512 | 410.00 ± 10.00 |" in md[3]


def test_worker_measures_depth_zero(tmp_path):
    from test_bench_worker import _job, _opener

    from distillm_edge.bench.worker import bench_job

    open_fn, made = _opener(tmp_path, prefill_s_per_token=0.0001, decode_s=0.002)
    row = bench_job(lambda e: None, _job(depth0=True), open_fn=open_fn)
    fake = made[1]
    assert len(row["tg_depth0_runs"]) == 2 and all(r > 0 for r in row["tg_depth0_runs"])
    assert sum(len(ids) == 1 for ids, _ in fake.calls) == 2  # two one-token prompts after the timed runs
    assert len(row["prefill_tps_runs"]) == 2
