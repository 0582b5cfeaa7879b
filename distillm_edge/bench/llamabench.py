"""A llama-bench-style table from a bench run: ``pp<N>`` and ``tg<G>`` in tokens/s, mean ± sd.

llama.cpp's ``llama-bench`` reports, per model and backend, prompt processing ``pp512`` (prompt
tokens / prefill time) and text generation ``tg128`` (generated tokens / generation time) as
the mean ± sample standard deviation over its repetitions, and ``tg128 @ d512`` for generation
after a context of 512 tokens. From our rows: ``pp<P>`` is each timed repetition's prompt tokens /
TTFT at prompt length P; ``tg<G> @ d<P>`` is each repetition's decode tokens/s after that prompt
(steady state, first token excluded: see ``measure.py``); ``tg<G>`` (depth 0) is decode after a
one-token prompt, measured once per model in the job with the shortest prompt
(``worker.bench_job``, ``Job.depth0``). The default prompt lengths include 512, so a full run
shows ``pp512`` and ``tg128`` as llama-bench names them.

Test: ``pytest tests/bench/test_bench_llamabench.py``.
"""

from __future__ import annotations

import math
import statistics

from distillm_edge.bench.report import series


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1, as llama-bench); sd is nan for one value."""
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def fmt(mean: float, sd: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.2f} ± {sd:.2f}" if not math.isnan(sd) else f"{mean:.2f}"


def rows(result: dict) -> list[dict]:
    """One entry per model series and test, in llama-bench's order: pp per prompt length, tg at depth
    0, tg at each prompt's depth."""
    out: list[dict] = []
    by_series: dict[str, list[dict]] = {}
    for row in result["rows"]:
        by_series.setdefault(series(row), []).append(row)
    for name, group in by_series.items():
        group = sorted(group, key=lambda r: r["prompt_tokens"])
        first = group[0]
        base = {"series": name, "threads": first["threads"]}
        for r in group:
            out.append({**base, "test": f"pp{r['prompt_tokens']}", "tps": mean_sd(r.get("prefill_tps_runs") or [])})
        for r in group:
            if r.get("tg_depth0_runs"):
                out.append({**base, "test": f"tg{r['gen_tokens']}", "tps": mean_sd(r["tg_depth0_runs"])})
        for r in group:
            out.append({**base, "test": f"tg{r['gen_tokens']} @ d{r['prompt_tokens']}",
                        "tps": mean_sd(r.get("decode_tps_runs") or [])})
    return out


COLUMNS = ("model · backend dtype", "threads", "test", "t/s")


def markdown(result: dict) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---:|---:|---:|"]
    lines += [f"| {e['series']} | {e['threads']} | {e['test']} | {fmt(*e['tps'])} |" for e in rows(result)]
    return lines


def table(result: dict):
    from rich.table import Table

    t = Table(title="bench: llama-bench style (mean ± sd over repetitions)", header_style="bold")
    for i, col in enumerate(COLUMNS):
        t.add_column(col, justify="left" if i == 0 else "right")
    for e in rows(result):
        t.add_row(e["series"], str(e["threads"]), e["test"], fmt(*e["tps"]))
    return t
