"""Timing helpers: planted delays on a fake clock give exact TTFT/tokens/s; percentiles vs numpy.

Run: ``pytest tests/bench/test_bench_measure.py``.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from bench_fakes import FakeBackend, FakeClock

from distillm_edge.bench.measure import percentile, stream_stats, summarize, time_stream


def test_planted_delays_give_exact_ttft_and_decode_speed():
    clock = FakeClock()
    backend = FakeBackend(prefill_s_per_token=0.002, decode_s=0.025, clock=clock)
    timing = time_stream(backend.stream(list(range(64)), 20), clock=clock)
    stats = stream_stats(timing, prompt_tokens=64)
    assert stats.generated == 20
    assert stats.ttft_s == pytest.approx(64 * 0.002)
    assert stats.prefill_tps == pytest.approx(1 / 0.002)
    assert stats.decode_tps == pytest.approx(1 / 0.025)
    assert stats.latencies_s == pytest.approx([0.025] * 19)


def test_generator_work_before_first_token_counts_as_ttft():
    """time_stream must start the clock before the generator runs its prefill."""
    clock = FakeClock()
    backend = FakeBackend(prefill_s_per_token=0.01, decode_s=0.001, clock=clock)
    stream = backend.stream([1] * 10, 3)  # lazily created: no time passes yet
    clock.advance(5.0)  # time spent before timing starts must not count
    stats = stream_stats(time_stream(stream, clock=clock), 10)
    assert stats.ttft_s == pytest.approx(0.1)


def test_real_sleeps_within_generous_bounds():
    """Real clock, sleep-based delays: sleeps never end early, so the planted speed is an upper bound."""
    backend = FakeBackend(prefill_s_per_token=0.001, decode_s=0.01)
    stats = stream_stats(time_stream(backend.stream([1] * 50, 11)), 50)
    assert 0.05 <= stats.ttft_s < 2.0
    assert 5 < stats.decode_tps <= 100 * 1.001
    assert min(stats.latencies_s) >= 0.01 * 0.999


def test_single_token_has_no_decode_speed_and_empty_stream_is_an_error():
    clock = FakeClock()
    stats = stream_stats(time_stream(FakeBackend(clock=clock).stream([1, 2], 1), clock=clock), 2)
    assert stats.generated == 1 and math.isnan(stats.decode_tps) and stats.latencies_s == ()
    with pytest.raises(ValueError, match="no token"):
        stream_stats(time_stream(iter([])), 2)


def naive_percentile(values, q):
    """Definition-level reference: the value at fractional rank q/100*(n-1), interpolated."""
    s = sorted(values)
    rank = q / 100 * (len(s) - 1)
    below = int(rank)
    if below == len(s) - 1:
        return s[-1]
    return s[below] * (1 - (rank - below)) + s[below + 1] * (rank - below)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101])
def test_percentile_matches_references(n):
    rng = random.Random(n)
    values = [rng.expovariate(1.0) for _ in range(n)]
    for q in (0, 1, 25, 50, 90, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
        assert percentile(values, q) == pytest.approx(naive_percentile(values, q))
    assert percentile(values, 0) == min(values) and percentile(values, 100) == max(values)


def test_percentile_edge_cases():
    assert math.isnan(percentile([], 50))
    assert percentile([3.0, 3.0, 3.0], 95) == 3.0
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_summarize_takes_medians_and_pools_latencies():
    clock = FakeClock()
    runs = []
    for decode_s in (0.01, 0.02, 0.04):  # median decode speed: 50 tok/s
        backend = FakeBackend(prefill_s_per_token=decode_s, decode_s=decode_s, clock=clock)
        runs.append(stream_stats(time_stream(backend.stream([1] * 10, 5), clock=clock), 10))
    summary = summarize(runs)
    assert summary["repeats"] == 3 and summary["generated"] == [5, 5, 5]
    assert summary["decode_tps"] == pytest.approx(50)
    assert summary["ttft_ms"] == pytest.approx(200)  # median of 100, 200, 400 ms
    pooled = [0.01] * 4 + [0.02] * 4 + [0.04] * 4
    assert summary["latency_p50_ms"] == pytest.approx(1000 * np.percentile(pooled, 50))
    assert summary["latency_p95_ms"] == pytest.approx(1000 * np.percentile(pooled, 95))
    with pytest.raises(ValueError):
        summarize([])
