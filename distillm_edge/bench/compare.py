"""`distillm-edge bench compare A.json B.json`: the change between two runs or two machines.

Rows are matched on (model file/name, backend, dtype, prompt tokens): the model's base name, so
runs on machines with different paths still match. For every matched row and metric we report
A, B and the ratio B / A; for speeds (tokens/s, roofline share) a ratio above 1 means B is better,
for times and memory below 1 does. Rows present in only one file are listed, not dropped.

Run: ``distillm-edge bench compare runs/bench/A/bench.json runs/bench/B/bench.json``.
Test: ``pytest tests/bench/test_bench_compare.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from distillm_edge.bench.report import num
from distillm_edge.errors import UserError

# (name, how to read it from a row, True when higher is better)
METRICS = [
    ("decode tok/s", lambda r: r.get("decode_tps"), True),
    ("prefill tok/s", lambda r: r.get("prefill_tps"), True),
    ("TTFT ms", lambda r: r.get("ttft_ms"), False),
    ("p95 ms", lambda r: r.get("latency_p95_ms"), False),
    ("peak RSS MiB", lambda r: r.get("peak_rss_mib"), False),
    ("load s", lambda r: r.get("load_s"), False),
    ("roofline", lambda r: (r.get("roofline") or {}).get("share"), True),
    ("b8 tok/s", lambda r: ((r.get("batch") or {}).get("8") or {}).get("decode_tps"), True),
]


def load_result(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; pass the bench.json written by `distillm-edge bench --out DIR`.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}.") from None
    if not isinstance(data, dict) or "rows" not in data:
        raise UserError(f"{path}: not a bench result (no 'rows' field); pass a bench.json from `distillm-edge bench`.")
    return data


def row_key(row: dict) -> tuple:
    return (Path(row["model"]).name, row["backend"], row["dtype"], row["prompt_tokens"])


def ratio(a, b) -> float:
    if a is None or b is None or not a or (isinstance(a, float) and math.isnan(a)):
        return math.nan
    return b / a


def compare(a: dict, b: dict) -> dict:
    """Matched rows with per-metric (A, B, B/A), plus the keys found in only one result."""
    rows_a = {row_key(r): r for r in a["rows"]}
    rows_b = {row_key(r): r for r in b["rows"]}
    matched = []
    for key in [k for k in rows_a if k in rows_b]:
        ra, rb = rows_a[key], rows_b[key]
        metrics = {name: {"a": get(ra), "b": get(rb), "ratio": ratio(get(ra), get(rb)), "higher_is_better": up}
                   for name, get, up in METRICS}
        matched.append({"key": key, "metrics": metrics})
    return {
        "matched": matched,
        "only_a": [k for k in rows_a if k not in rows_b],
        "only_b": [k for k in rows_b if k not in rows_a],
    }


def _cell(metric: dict) -> str:
    r = metric["ratio"]
    text = f"{num(metric['a'])} → {num(metric['b'])} ({num(r, '.2f')}x)"
    if isinstance(r, float) and not math.isnan(r) and abs(r - 1) > 0.05:
        better = (r > 1) == metric["higher_is_better"]
        return f"[{'green' if better else 'red'}]{text}[/]"
    return text


def print_comparison(a: dict, b: dict, names: tuple[str, str], console: Console) -> dict:
    result = compare(a, b)
    for label, data, name in (("A", a, names[0]), ("B", b, names[1])):
        m, bw = data.get("machine", {}), data.get("bandwidth", {})
        console.print(f"{label}: {name} — {m.get('cpu', '?')}, {data.get('config', {}).get('threads_used', '?')} "
                      f"threads, bandwidth {num(bw.get('bound_gbps'))} GB/s, started {data.get('started', '?')}")
    table = Table(title="bench compare (A → B, ratio B/A)", header_style="bold")
    for col in ("model", "backend", "dtype", "prompt", *(name for name, _, _ in METRICS)):
        table.add_column(col)
    for item in result["matched"]:
        model, backend, dtype, prompt = item["key"]
        table.add_row(model, backend, dtype, str(prompt), *(_cell(item["metrics"][n]) for n, _, _ in METRICS))
    console.print(table)
    for label, keys in (("only in A", result["only_a"]), ("only in B", result["only_b"])):
        for key in keys:
            console.print(f"[yellow]{label}:[/] {key[0]} {key[1]} {key[2]} @ {key[3]} tokens")
    if not result["matched"]:
        console.print("[yellow]no row matched: the two runs share no model × backend × dtype × prompt length.[/]")
    return result


def run_compare(path_a: Path, path_b: Path, console: Console | None = None) -> dict:
    return print_comparison(load_result(path_a), load_result(path_b), (str(path_a), str(path_b)),
                            console or Console())
