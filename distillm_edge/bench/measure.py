"""Timing a token stream from outside, and the statistics the benchmark reports. Pure functions.

``time_stream`` reads the clock once before asking a generator for its first token and once after
each token arrives. From those timestamps, for a prompt of P tokens and G generated tokens:

- time to first token (TTFT) = first token time - start (prefill + first sampling step);
- prefill tokens/s = P / TTFT;
- decode tokens/s = (G - 1) / (last token time - first token time): steady-state generation,
  excluding the prefill;
- per-token latency = the gaps between consecutive tokens (G - 1 values per run).

Repetitions are summarised by medians (TTFT, tokens/s) and pooled latency percentiles. The clock is
injectable so tests can plant exact delays.

Test: ``pytest tests/bench/test_bench_measure.py``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StreamTiming:
    start: float
    token_times: tuple[float, ...]
    tokens: tuple[int, ...]


def time_stream(tokens: Iterable[int], clock: Callable[[], float] = time.perf_counter) -> StreamTiming:
    """Consume ``tokens`` (a lazy generator: nothing may run before the first ``next``), timing each."""
    start = clock()
    times: list[float] = []
    ids: list[int] = []
    for token in tokens:
        times.append(clock())
        ids.append(int(token))
    return StreamTiming(start, tuple(times), tuple(ids))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q} is outside 0..100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class RunStats:
    """One timed generation."""

    prompt_tokens: int
    generated: int
    ttft_s: float
    prefill_tps: float
    decode_tps: float
    latencies_s: tuple[float, ...]


def stream_stats(timing: StreamTiming, prompt_tokens: int) -> RunStats:
    if not timing.token_times:
        raise ValueError("the backend generated no token, so there is nothing to time")
    times = timing.token_times
    ttft = times[0] - timing.start
    decode_span = times[-1] - times[0]
    latencies = tuple(b - a for a, b in zip(times, times[1:]))
    return RunStats(
        prompt_tokens=prompt_tokens,
        generated=len(times),
        ttft_s=ttft,
        prefill_tps=prompt_tokens / ttft if ttft > 0 else math.inf,
        decode_tps=(len(times) - 1) / decode_span if decode_span > 0 else math.nan,
        latencies_s=latencies,
    )


def summarize(runs: Sequence[RunStats]) -> dict:
    """Medians over repetitions plus pooled per-token latency percentiles (milliseconds)."""
    if not runs:
        raise ValueError("no timed repetition to summarise")
    latencies = [x for run in runs for x in run.latencies_s]
    decode = [r.decode_tps for r in runs if not math.isnan(r.decode_tps)]
    return {
        "repeats": len(runs),
        "generated": [r.generated for r in runs],
        "ttft_ms": 1000 * statistics.median(r.ttft_s for r in runs),
        "prefill_tps": statistics.median(r.prefill_tps for r in runs),
        "prefill_tps_runs": [r.prefill_tps for r in runs],
        "decode_tps": statistics.median(decode) if decode else math.nan,
        "decode_tps_runs": [r.decode_tps for r in runs],
        "latency_p50_ms": 1000 * percentile(latencies, 50),
        "latency_p95_ms": 1000 * percentile(latencies, 95),
    }
