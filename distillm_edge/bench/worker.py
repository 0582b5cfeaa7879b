"""One benchmark job — one model on one backend at one prompt length — run inside a child process.

``bench_job(emit, job)`` opens the backend, builds the prompts with the model's own tokenizer,
does the warm-up and timed repetitions through ``Backend.stream``, then the batch runs (torch
and llama.cpp, ``batch.py``), and returns one result row (a plain dict). Peak memory is read after the single-stream runs
and again after the batch runs, so batch-8's activations do not inflate the single-stream figure.
For llama.cpp it also reads llama.cpp's own performance counters around every timed repetition.

``emit`` sends progress events to the parent (``{"total": n}`` once, then ``{"step": text}``).
``open_fn`` is injectable so tests can run a job on a fake backend in-process.

Test: ``pytest tests/bench/test_bench_worker.py``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from distillm_edge.bench.batch import batch_unsupported
from distillm_edge.bench.config import ModelRun
from distillm_edge.bench.measure import stream_stats, summarize, time_stream
from distillm_edge.bench.memory import MIB, current_rss, peak_rss
from distillm_edge.bench.prompts import PromptBuilder

TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
CONTEXT_SLACK = 64  # llama.cpp context = prompt + generated tokens + this


@dataclass(frozen=True)
class Job:
    run: ModelRun
    prompt_tokens: int
    gen_tokens: int
    repeats: int
    warmup: int
    threads: int
    batch_sizes: tuple[int, ...]
    batch_warmup: int = 1
    batch_repeats: int = 3
    depth0: bool = False  # also time generation after a one-token prompt (llama-bench's tg at depth 0)


def backend_kind(run: ModelRun) -> str:
    """The backend a run will use ("auto" resolved exactly as ``open_backend`` does)."""
    if run.backend != "auto":
        return run.backend
    from distillm_edge.models.sources import resolve

    return {"gguf": "gguf", "onnx_dir": "onnx"}.get(resolve(run.spec).kind, "torch")


def backend_options(job: Job, kind: str) -> dict:
    if kind == "torch":
        return {"dtype": TORCH_DTYPES[job.run.dtype], "quantization": job.run.quantization, "threads": job.threads}
    if kind == "gguf":
        return {"threads": job.threads, "n_ctx": job.prompt_tokens + job.gen_tokens + CONTEXT_SLACK}
    return {"threads": job.threads}


def _timed_streams(backend, prompts: list[list[int]], gen_tokens: int, perf: bool, emit, label: str):
    stats, counters = [], []
    for i, ids in enumerate(prompts):
        emit({"step": f"{label} {i + 1}/{len(prompts)}"})
        if perf:
            backend.reset_perf()
        timing = time_stream(backend.stream(ids, gen_tokens))
        if perf:
            counters.append(backend.perf())
        stats.append(stream_stats(timing, len(ids)))
    return stats, counters


def _batch(backend, kind: str, builder: PromptBuilder, job: Job, size: int, emit) -> dict:
    """Median batched-decode figures for ``size`` distinct prompts (warm-up runs dropped)."""
    from distillm_edge.bench.batch import generate_batch

    rows = [builder.prompt(job.prompt_tokens, k) for k in range(size)]
    runs = []
    for i in range(job.batch_warmup + job.batch_repeats):
        emit({"step": f"batch {size} run {i + 1}/{job.batch_warmup + job.batch_repeats}"})
        result = generate_batch(kind, backend, rows, job.gen_tokens)
        if i >= job.batch_warmup:
            runs.append(result)
    return {key: statistics.median(r[key] for r in runs) for key in ("decode_tps", "total_tps", "prefill_s")}


def llamacpp_summary(counters: list[dict]) -> dict:
    """llama.cpp's own decode and prompt tokens/s per repetition, and their medians."""
    decode = [c["eval_tokens"] / (c["eval_ms"] / 1000) for c in counters if c["eval_ms"] > 0]
    prefill = [c["prompt_tokens"] / (c["prompt_eval_ms"] / 1000) for c in counters if c["prompt_eval_ms"] > 0]
    return {
        "decode_tps": statistics.median(decode) if decode else math.nan,
        "prefill_tps": statistics.median(prefill) if prefill else math.nan,
        "decode_tps_runs": decode,
        "counters": counters,
    }


def bench_job(emit: Callable[[dict], None], job: Job, open_fn: Callable | None = None) -> dict:
    from distillm_edge.bench.roofline import path_bytes, weight_bytes

    if open_fn is None:
        from distillm_edge.backends import open_backend as open_fn
    kind = backend_kind(job.run)
    batch_na = batch_unsupported(kind)
    batch_sizes = () if batch_na else job.batch_sizes
    per_rep = job.warmup + job.repeats
    emit({"total": 2 + per_rep + job.repeats * job.depth0 + (job.batch_warmup + job.batch_repeats) * len(batch_sizes)})
    emit({"step": "loading"})
    if kind == "torch":  # transformers' "Loading weights" bar would tear through the parent's progress display
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    rss_start = current_rss()
    opened = time.perf_counter()
    backend = open_fn(job.run.spec, backend=kind, **backend_options(job, kind))
    open_s = time.perf_counter() - opened
    rss_loaded = current_rss()
    try:
        builder = PromptBuilder(backend.tokenize)
        prompts = [builder.prompt(job.prompt_tokens, k) for k in range(per_rep)]
        perf = kind == "gguf"
        _timed_streams(backend, prompts[: job.warmup], job.gen_tokens, False, emit, "warm-up")
        stats, counters = _timed_streams(backend, prompts[job.warmup :], job.gen_tokens, perf, emit, "timed run")
        depth0 = []
        if job.depth0:  # one-token prompts (the BOS when the model adds one): generation at depth 0
            first = [builder.prompt(len(builder.prefix) + 1, k)[:1] for k in range(job.repeats)]
            depth0 = [s.decode_tps for s in _timed_streams(backend, first, job.gen_tokens, False, emit, "depth 0")[0]]
        peak_single = peak_rss()

        if not batch_na and batch_unsupported(kind, backend):  # e.g. a llama.cpp backend without a context
            batch_na, batch_sizes = batch_unsupported(kind, backend), ()
            emit({"total": 2 + per_rep})
        batches = {str(size): _batch(backend, kind, builder, job, size, emit) for size in batch_sizes}
        peak_batch = peak_rss()

        emit({"step": "sizing weights"})
        info = backend.info
        bytes_per_token, rule = weight_bytes(backend)
        row = {
            "model": job.run.spec, "label": job.run.label, "backend": info.backend, "dtype": info.dtype,
            "path": info.path, "threads": info.threads, "prompt_tokens": job.prompt_tokens,
            "gen_tokens": job.gen_tokens, "warmup": job.warmup,
            "batch_runs": {"warmup": job.batch_warmup, "timed": job.batch_repeats} if batches else None, "load_s": info.load_seconds, "open_s": open_s,
            **summarize(stats),
            "rss_start_mib": rss_start / MIB, "rss_loaded_mib": rss_loaded / MIB,
            "peak_rss_mib": peak_single / MIB, "peak_rss_batch_mib": peak_batch / MIB if batches else None,
            "file_bytes": path_bytes(info.path), "weight_bytes": bytes_per_token, "weight_bytes_rule": rule,
            "batch": batches, "batch_na": batch_na,
            "llamacpp": llamacpp_summary(counters) if perf else None, "tg_depth0_runs": depth0,
            "backend_extra": info.extra,
        }
        row["stopped_early"] = any(n < job.gen_tokens for n in row["generated"])
        return row
    finally:
        backend.close()
