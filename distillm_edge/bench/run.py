"""`distillm-edge bench`: time every model × backend × prompt length, then report.

Read top to bottom: machine info → memory bandwidth (cached) → one spawned child process per
model × prompt length (``worker.bench_job``; fresh process so peak memory is its own) with a rich
progress bar fed by the child's events → derived figures (roofline share, llama.cpp cross-check)
→ ``bench.json``, ``report.md``, PNG charts and a table on screen.

Run: ``distillm-edge bench --model smollm2-135m-instruct --quick``.
Test: ``pytest tests/bench/test_bench_run.py`` (fake backend in-process) and ``tests/bench/test_bench_real.py`` (slow: real models).
"""

from __future__ import annotations

import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from distillm_edge.bench.config import BenchConfig
from distillm_edge.bench.machine import load_average, machine_info, machine_key
from distillm_edge.bench.memory import MIB, run_in_child
from distillm_edge.bench.roofline import cached_bandwidth, roofline
from distillm_edge.bench.worker import Job, bench_job

CROSSCHECK_TOLERANCE = 0.10  # our llama.cpp decode tokens/s vs llama.cpp's own counters
FORMAT_VERSION = 1


def crosscheck(ours: float, theirs: float, tolerance: float = CROSSCHECK_TOLERANCE) -> dict:
    """Does our decode tokens/s agree with llama.cpp's own counters within ``tolerance``?"""
    ratio = ours / theirs if theirs and theirs > 0 and not math.isnan(ours) else math.nan
    return {"ours_tps": ours, "llamacpp_tps": theirs, "ratio": ratio, "tolerance": tolerance,
            "passed": bool(abs(ratio - 1) <= tolerance) if not math.isnan(ratio) else False}


def add_derived(row: dict, bandwidth_gbps: float) -> dict:
    """Roofline share of the decode speed and, for llama.cpp rows, the cross-check verdict."""
    row["roofline"] = roofline(row["decode_tps"], row["weight_bytes"], bandwidth_gbps)
    if row.get("llamacpp"):
        row["crosscheck"] = crosscheck(row["decode_tps"], row["llamacpp"]["decode_tps"])
    return row


def _progress(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


def run_jobs(cfg: BenchConfig, threads: int, progress: Progress, job_fn: Callable = bench_job,
             in_child: bool = True) -> list[dict]:
    """Every model × prompt length, each in its own child process (or in-process for tests)."""
    rows = []
    batch_warmup, batch_repeats = (cfg.warmup, cfg.repeats) if cfg.batch_repeats is None else (0, cfg.batch_repeats)
    jobs = [Job(run, n, cfg.gen_tokens, cfg.repeats, cfg.warmup, threads, cfg.batch_sizes, batch_warmup, batch_repeats,
                depth0=n == min(cfg.prompt_lengths))
            for run in cfg.models for n in cfg.prompt_lengths]
    overall = progress.add_task(f"bench: {len(jobs)} jobs", total=len(jobs))
    for job in jobs:
        what = f"{job.run.label} @ {job.prompt_tokens} tokens"
        shown = escape(what)  # "[gguf]" is text, not rich markup
        task = progress.add_task(shown, total=None)

        def on_event(event: dict, task=task, shown=shown) -> None:
            if "total" in event:
                progress.update(task, total=event["total"])
            if "step" in event:
                progress.update(task, advance=1, description=f"{shown}: {escape(event['step'])}")

        if in_child:
            child = run_in_child(job_fn, job, on_event=on_event, what=what)
            row = {**child.value, "child_peak_rss_mib": child.peak_rss / MIB}
        else:
            row = job_fn(on_event, job)
        progress.update(task, completed=progress.tasks[task].total or 0, description=f"{shown}: done")
        progress.advance(overall)
        progress.console.print(  # one line per job: readable in CI logs, where the bars do not animate
            f"done {shown}: TTFT {row['ttft_ms']:.0f} ms, decode {row['decode_tps']:.1f} tok/s, "
            f"peak RSS {row['peak_rss_mib']:.0f} MiB", highlight=False)
        rows.append(row)
    return rows


def run(cfg: BenchConfig, console: Console | None = None, job_fn: Callable = bench_job,
        in_child: bool = True) -> Path:
    """Run the benchmark described by ``cfg``; return the path of the written ``bench.json``."""
    from distillm_edge.bench.report import print_summary, write_report
    from distillm_edge.models.sources import resolve

    console = console or Console(stderr=True)
    for model in cfg.models:  # fail on a bad --model now, not after benchmarking the ones before it
        resolve(model.spec)
    started = time.time()
    machine = {**machine_info(), "load_avg_start": load_average()}
    threads = cfg.threads or machine["physical_cores"]
    with _progress(console) as progress:
        task = progress.add_task(f"measuring memory bandwidth ({threads} threads; cached after the first run)")
        bandwidth = cached_bandwidth(threads, machine_key(machine))
        progress.update(task, total=1, completed=1)
        rows = run_jobs(cfg, threads, progress, job_fn=job_fn, in_child=in_child)
    machine["load_avg_end"] = load_average()
    for row in rows:
        add_derived(row, bandwidth["bound_gbps"])
    result = {
        "format": FORMAT_VERSION,
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "config": {**asdict(cfg), "out": str(cfg.out), "threads_used": threads},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "wall_s": time.time() - started,
        "machine": machine,
        "bandwidth": bandwidth,
        "rows": rows,
    }
    path = write_report(result, Path(cfg.out))
    print_summary(result, Console(), path)
    return path
