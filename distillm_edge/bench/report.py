"""Writing a benchmark result: ``bench.json``, ``report.md``, PNG charts and the on-screen table.

The same column lists (``SPEED_COLUMNS``, ``COST_COLUMNS``) feed the rich tables and the markdown
tables, so the screen and the report always agree. NaN/inf become ``null`` in the JSON. Charts use matplotlib's Agg
backend (no display needed): ``tokens_per_s.png`` (decode and prefill tokens/s per prompt length,
one bar per model/backend) and ``memory.png`` (peak resident memory and model file size).

Test: ``pytest tests/bench/test_bench_run.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from distillm_edge.bench.memory import MIB
from distillm_edge.io import atomic_write_json, atomic_write_text, ensure_dir


def clean(obj):
    """A JSON-safe copy: NaN and infinities become None (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def num(value, spec: str = ".1f", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value * scale, spec)


def series(row: dict) -> str:
    """A short name for one model on one backend and dtype (chart legends, compare keys)."""
    return f"{Path(row['model']).name} · {row['backend']} {row['dtype']}"


def _batch(row: dict, size: str) -> str:
    entry = (row.get("batch") or {}).get(size)
    return num(entry["decode_tps"]) if entry else "n/a"


def _share(row: dict) -> str:
    share = (row.get("roofline") or {}).get("share")
    return num(share, ".0%") if share is not None else "n/a"


KEY_COLUMNS = [
    ("model · backend dtype", series),
    ("prompt", lambda r: str(r["prompt_tokens"])),
]
SPEED_COLUMNS = [
    ("TTFT ms", lambda r: num(r["ttft_ms"])),
    ("prefill tok/s", lambda r: num(r["prefill_tps"])),
    ("decode tok/s", lambda r: num(r["decode_tps"])),
    ("p50 ms", lambda r: num(r["latency_p50_ms"], ".2f")),
    ("p95 ms", lambda r: num(r["latency_p95_ms"], ".2f")),
    ("b1 tok/s", lambda r: _batch(r, "1")),
    ("b4 tok/s", lambda r: _batch(r, "4")),
    ("b8 tok/s", lambda r: _batch(r, "8")),
]
COST_COLUMNS = [
    ("threads", lambda r: str(r["threads"])),
    ("load s", lambda r: num(r["load_s"], ".2f")),
    ("peak RSS MiB", lambda r: num(r["peak_rss_mib"], ".0f")),
    ("file MiB", lambda r: num(r["file_bytes"] / MIB)),
    ("MiB/token", lambda r: num(r["weight_bytes"] / MIB)),
    ("bound tok/s", lambda r: num((r.get("roofline") or {}).get("bound_tps"))),
    ("roofline", _share),
]
TABLES = (("speed", SPEED_COLUMNS), ("memory and roofline", COST_COLUMNS))


def table_rows(result: dict, columns) -> list[list[str]]:
    return [[get(row) for _, get in KEY_COLUMNS + columns] for row in result["rows"]]


def results_tables(result: dict) -> list[Table]:
    tables = []
    for title, columns in TABLES:
        table = Table(title=f"bench: {title}", header_style="bold")
        for i, (name, _) in enumerate(KEY_COLUMNS + columns):
            table.add_column(name, justify="left" if i == 0 else "right")
        for cells in table_rows(result, columns):
            table.add_row(*cells)
        tables.append(table)
    return tables


def markdown_table(result: dict, columns) -> list[str]:
    names = [name for name, _ in KEY_COLUMNS + columns]
    return ["| " + " | ".join(names) + " |", "|---|" + "---:|" * (len(names) - 1),
            *("| " + " | ".join(cells) + " |" for cells in table_rows(result, columns))]


def crosscheck_lines(result: dict) -> list[str]:
    lines = []
    for row in result["rows"]:
        check = row.get("crosscheck")
        if not check:
            continue
        verdict = "PASS" if check["passed"] else "FAIL"
        lines.append(
            f"llama.cpp cross-check {verdict}: {series(row)} @ {row['prompt_tokens']} tokens: decode "
            f"{num(check['ours_tps'])} tok/s measured vs {num(check['llamacpp_tps'])} tok/s from llama.cpp's "
            f"own counters (ratio {num(check['ratio'], '.3f')}, tolerance ±{check['tolerance']:.0%})"
        )
    return lines


def notes(result: dict) -> list[str]:
    """Warnings a reader must see next to the numbers."""
    out = []
    cores = result["machine"].get("logical_cores") or 1
    for when in ("start", "end"):
        load = result["machine"].get(f"load_avg_{when}") or []
        if load and load[0] > 0.75 * cores:
            out.append(f"the machine was busy at the {when} (1-min load average {load[0]} on {cores} cores): "
                       "timings are noisy; rerun on an idle machine before drawing conclusions.")
    threads = result["config"].get("threads_used", 1)
    if threads > 1 and any(n.startswith("the machine was busy") for n in out):
        out.append(f"{threads} threads on shared cores: a thread that waits for a descheduled partner at every "
                   "barrier makes multi-threaded runs collapse under load; compare backends with --threads 1 there.")
    bw_load = (result["bandwidth"].get("load_avg") or [0])[0]
    if bw_load > 0.75 * cores:
        out.append(f"memory bandwidth was measured on a busy machine (load {bw_load}), so the bound is too low and "
                   "roofline shares too high; delete the bandwidth cache named under Machine and rerun on an idle machine.")
    for row in result["rows"]:
        if row.get("stopped_early"):
            out.append(f"{series(row)} @ {row['prompt_tokens']}: generation stopped at EOS before "
                       f"{row['gen_tokens']} tokens (generated {row['generated']}); its figures cover fewer tokens.")
    reasons = {row["backend"]: row["batch_na"] for row in result["rows"] if row.get("batch_na")}
    out += [f"batch throughput n/a for {backend}: {why}." for backend, why in sorted(reasons.items())]
    return out


def markdown(result: dict) -> str:
    from distillm_edge.bench import llamabench

    m, bw, cfg = result["machine"], result["bandwidth"], result["config"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    rules = sorted({f"  - {row['backend']}: {row['weight_bytes_rule']}" for row in result["rows"]})
    lines = [
        "# distillm-edge bench",
        "",
        f"Started {result['started']}, {result['wall_s']:.0f} s wall. Command: `{result.get('command', '')}`",
        "",
        "## Machine",
        f"- CPU: {m['cpu']} ({m['physical_cores']} physical / {m['logical_cores']} logical cores), "
        f"RAM {m['ram_gib']} GiB, {m['os']}, Python {m['python']}",
        f"- Libraries: {libs}",
        f"- Threads used: {cfg['threads_used']}; load average at start {m.get('load_avg_start')}, "
        f"at end {m.get('load_avg_end')}",
        f"- Memory bandwidth ({bw['threads']} threads, numpy, {bw['buffer_mib']:.0f} MiB buffer, median of "
        f"{bw['repeats']}): read {bw['read_gbps']:.1f} GB/s, copy {bw['copy_gbps']:.1f} GB/s; bound uses "
        f"{bw['bound_gbps']:.1f} GB/s (measured {bw['measured_at']} at load {bw.get('load_avg')}"
        f"{', from the cache' if bw.get('from_cache') else ''} {bw.get('cache', '')})",
        "",
        "## Results",
        f"{cfg['gen_tokens']} generated tokens per run (greedy), {cfg['warmup']} warm-up and {cfg['repeats']} "
        "timed repetitions per row, each row in its own process.",
        "",
        *markdown_table(result, SPEED_COLUMNS),
        "",
        *markdown_table(result, COST_COLUMNS),
        "",
        "llama-bench style: pp<N> = prompt tokens / TTFT, tg<G> = decode tokens/s after a one-token prompt "
        "(depth 0), tg<G> @ d<N> = after an N-token prompt; mean ± sample sd over the timed repetitions.",
        "",
        *llamabench.markdown(result),
        "",
        "## Cross-check",
        *(f"- {line}" for line in crosscheck_lines(result) or ["no llama.cpp row in this run."]),
        "",
        "## Definitions",
        "- prompts: exactly N tokens of the shipped medical text (`distillm_edge/bench/medical_text.json`) in each "
        "model's own tokenizer, as raw text to continue; a different prompt for every warm-up and repetition, so "
        "no run reuses another's KV cache (llama.cpp keeps a common prefix: only the BOS token is shared).",
        "- TTFT: from asking for the first token to receiving it (prefill + first sampling step); "
        "prefill tok/s = prompt tokens / TTFT.",
        "- decode tok/s: (generated - 1) / (last token time - first token time), median over repetitions; "
        "p50/p95: gaps between consecutive tokens, pooled over repetitions.",
        "- peak RSS: the child process's own high-water mark (VmHWM) after the single-stream runs, including "
        "the Python interpreter and the backend's libraries; batch runs come after this reading.",
        "- bound tok/s = bandwidth / bytes read per token; roofline = decode tok/s / bound. Bytes per token:",
        *rules,
        "- b1/b4/b8 tok/s: batched greedy decode tokens/s (all rows together, EOS ignored) after the batch prefill "
        "(llama.cpp: k sequences in one context; ONNX: k rows of one session's KV buffers, as serve runs them, "
        "or GenAI's batched Generator for exports without shared buffers); "
        + (f"median of {cfg['repeats']} timed runs after {cfg['warmup']} warm-up."
           if cfg.get("batch_repeats") is None else
           f"{cfg['batch_repeats']} timed run(s), no batch warm-up (the single-stream runs warmed the model)."),
        "",
    ]
    if notes(result):
        lines += ["## Notes", *(f"- {n}" for n in notes(result)), ""]
    lines += ["Charts: `tokens_per_s.png`, `memory.png`.", ""]
    return "\n".join(lines)


def write_charts(result: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    names = list(dict.fromkeys(series(r) for r in rows))
    lengths = sorted({r["prompt_tokens"] for r in rows})
    width = 0.8 / max(len(names), 1)
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in ((axes[0], "decode_tps", "decode tokens/s"), (axes[1], "prefill_tps", "prefill tokens/s")):
        for i, name in enumerate(names):
            values = [next((r[key] for r in rows if series(r) == name and r["prompt_tokens"] == n), None) for n in lengths]
            ax.bar([j + i * width for j in range(len(lengths))], [v if v is not None else 0 for v in values],
                   width, label=name)
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(lengths))], [str(n) for n in lengths])
        ax.set_xlabel("prompt tokens")
        ax.set_title(title)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(names), 3), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 * ((len(names) + 2) // 3), 1, 1))
    paths.append(out / "tokens_per_s.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 2.0 + 0.5 * len(names)))
    peak = [max(r["peak_rss_mib"] for r in rows if series(r) == name) for name in names]
    size = [max(r["file_bytes"] for r in rows if series(r) == name) / MIB for name in names]
    ys = range(len(names))
    ax.barh([y + 0.2 for y in ys], peak, 0.4, label="peak RSS (MiB)")
    ax.barh([y - 0.2 for y in ys], size, 0.4, label="model file (MiB)")
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xlabel("MiB")
    ax.set_title("peak resident memory and model file size")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2)
    fig.tight_layout()
    paths.append(out / "memory.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write_report(result: dict, out: Path) -> Path:
    """Write bench.json, report.md and the charts into ``out``; return the JSON's path."""
    ensure_dir(out)
    result = clean(result)
    atomic_write_json(out / "bench.json", result)
    atomic_write_text(out / "report.md", markdown(result))
    write_charts(result, out)
    return out / "bench.json"


def print_summary(result: dict, console: Console, path: Path) -> None:
    from distillm_edge.bench import llamabench

    result = clean(result)
    for table in results_tables(result):
        console.print(table)
    console.print(llamabench.table(result))
    for line in crosscheck_lines(result):
        console.print(f"[{'green' if 'PASS' in line else 'red'}]{line}[/]")
    for note in notes(result):
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"wrote {path}, {path.parent / 'report.md'}, tokens_per_s.png, memory.png "
                  f"({result['wall_s']:.0f} s)")
