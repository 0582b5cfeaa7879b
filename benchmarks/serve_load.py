"""Load benchmark of `distillm-edge serve` against llama-cpp-python's server, on the same GGUF.

Starts both servers on 127.0.0.1 (ours with the safety layer on: red-flag checks and one durable
audit-log append per exchange; the baseline ``python -m llama_cpp.server`` with
``--interrupt_requests False`` so concurrent streams queue instead of cutting each other off),
both with the same threads. For each concurrency level (1, 4, 16 streaming clients; each client
sends ``--requests`` chat requests one after another, greedy, ``--max-tokens`` each) it runs the
load on ours, then on the baseline, ``--repeats`` times alternating, and reports per server:
requests/s, generated tokens/s (the streamed text re-tokenized with the GGUF's own tokenizer, the
same count for both servers), time to first token and request latency p50/p95/p99, and errors;
then the throughput ratio ours / baseline (medians over repeats). The machine's load average is
printed with the numbers (it is shared); the ratio is measured side by side, so it holds up better
than the absolute figures.

Run: ``python benchmarks/serve_load.py [--model smollm2-135m-instruct] [--concurrency 1,4,16]
[--requests 2] [--max-tokens 48] [--threads 2] [--repeats 1] [--out load.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTIONS = [
    "Explain the first-line treatment of hypertension in adults.", "What are the symptoms of anemia?",
    "Describe how type 2 diabetes is diagnosed.", "How is community-acquired pneumonia treated?",
    "What causes migraine and how is it prevented?", "Explain the stages of chronic kidney disease.",
    "What are the risk factors for osteoporosis?", "How should asthma be managed in children?",
    "Describe the complications of untreated hypothyroidism.", "What is the role of statins?",
    "Explain how warfarin is monitored.", "What are common causes of chronic cough?",
    "Describe the management of gout flares.", "What vaccines are recommended for older adults?",
    "How is iron deficiency treated?", "What are the signs of dehydration in the elderly?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see its log")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout} s")


async def one_request(client, url: str, question: str, max_tokens: int) -> dict:
    body = {"model": "m", "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    started = time.perf_counter()
    ttft, text = None, []
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return {"error": f"HTTP {r.status_code}"}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return {"error": chunk["error"].get("message", "error")}
                for choice in chunk.get("choices", []):
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        ttft = ttft if ttft is not None else time.perf_counter() - started
                        text.append(piece)
    except Exception as exc:  # a benchmark counts failures, it does not stop at them
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"ttft": ttft if ttft is not None else float("nan"), "latency": time.perf_counter() - started,
            "text": "".join(text)}


async def run_level(url: str, clients: int, requests: int, max_tokens: int) -> tuple[list[dict], float]:
    import httpx

    async with httpx.AsyncClient(timeout=600) as client:
        async def worker(c: int) -> list[dict]:
            return [await one_request(client, url, QUESTIONS[(c * requests + i) % len(QUESTIONS)], max_tokens)
                    for i in range(requests)]

        started = time.perf_counter()
        results = await asyncio.gather(*(worker(c) for c in range(clients)))
        return [r for rs in results for r in rs], time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def summarize(results: list[dict], wall: float, count_tokens) -> dict:
    ok = [r for r in results if "error" not in r]
    tokens = sum(count_tokens(r["text"]) for r in ok)
    lat = [r["latency"] for r in ok]
    ttft = [r["ttft"] for r in ok if r["ttft"] == r["ttft"]]
    return {"requests": len(results), "errors": len(results) - len(ok), "wall_s": wall,
            "req_s": len(ok) / wall, "tok_s": tokens / wall, "tokens": tokens,
            "ttft_p50": pct(ttft, 50), "ttft_p95": pct(ttft, 95),
            "lat_p50": pct(lat, 50), "lat_p95": pct(lat, 95), "lat_p99": pct(lat, 99),
            "error_samples": sorted({r["error"] for r in results if "error" in r})[:3]}


def median_row(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) if isinstance(rows[0][k], (int, float)) else rows[0][k]
            for k in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests", type=int, default=2, help="requests per client at each level")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=16, help="our server's slots")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]

    from llama_cpp import Llama

    from distillm_edge.models.sources import gguf_path, resolve

    gguf = str(gguf_path(resolve(args.model)))
    vocab = Llama(model_path=gguf, vocab_only=True, verbose=False)

    def count_tokens(text: str) -> int:
        return len(vocab.tokenize(text.encode(), add_bos=False, special=False)) if text else 0

    tmp = Path(tempfile.mkdtemp(prefix="serve_load_"))
    ours_port, base_port = free_port(), free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ours_cmd = [sys.executable, "-c", "from distillm_edge.cli import main; main()", "serve", "--model", gguf,
                "--backend", "gguf", "--port", str(ours_port), "--threads", str(args.threads),
                "--parallel", str(args.parallel), "--queue", str(4 * max(levels)), "--ctx-per-slot", "512",
                "--max-prompt-tokens", "256", "--max-tokens-limit", "256", "--audit-db", str(tmp / "audit.sqlite3")]
    base_cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--port", str(base_port),
                "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads), "--n_ctx", "2048",
                "--interrupt_requests", "False"]
    logs = {name: open(tmp / f"{name}.log", "w") for name in ("ours", "llama_cpp.server")}
    procs = {"ours": subprocess.Popen(ours_cmd, stdout=logs["ours"], stderr=subprocess.STDOUT, env=env),
             "llama_cpp.server": subprocess.Popen(base_cmd, stdout=logs["llama_cpp.server"],
                                                  stderr=subprocess.STDOUT, env=env)}
    urls = {"ours": f"http://127.0.0.1:{ours_port}", "llama_cpp.server": f"http://127.0.0.1:{base_port}"}
    try:
        wait_ready(f"{urls['ours']}/healthz", procs["ours"])
        wait_ready(f"{urls['llama_cpp.server']}/v1/models", procs["llama_cpp.server"])
        for url in urls.values():  # warm-up: one request each
            asyncio.run(run_level(url, 1, 1, 8))
        load_start = os.getloadavg()
        table: dict[int, dict[str, dict]] = {}
        for level in levels:
            runs: dict[str, list[dict]] = {name: [] for name in urls}
            for _ in range(args.repeats):
                for name, url in urls.items():
                    results, wall = asyncio.run(run_level(url, level, args.requests, args.max_tokens))
                    runs[name].append(summarize(results, wall, count_tokens))
                    row = runs[name][-1]
                    print(f"  c={level:>2} {name:<17} {row['tok_s']:7.1f} tok/s  {row['errors']} errors  "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
            table[level] = {name: median_row(rs) for name, rs in runs.items()}
        load_end = os.getloadavg()
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for fh in logs.values():
            fh.close()

    print(f"\nmodel {gguf}\nthreads {args.threads}, our slots {args.parallel}, {args.requests} requests per client, "
          f"max_tokens {args.max_tokens}, greedy, medians of {args.repeats}; load average {load_start[0]:.2f} at "
          f"start, {load_end[0]:.2f} at end ({os.cpu_count()} CPUs)\n")
    head = (f"{'clients':>7} {'server':<17} {'req/s':>6} {'tok/s':>7} {'TTFT p50':>9} {'TTFT p95':>9} "
            f"{'lat p50':>8} {'lat p95':>8} {'lat p99':>8} {'errors':>6}")
    print(head)
    print("-" * len(head))
    for level, rows in table.items():
        for name, r in rows.items():
            print(f"{level:>7} {name:<17} {r['req_s']:6.2f} {r['tok_s']:7.1f} {r['ttft_p50']:8.2f}s {r['ttft_p95']:8.2f}s "
                  f"{r['lat_p50']:7.2f}s {r['lat_p95']:7.2f}s {r['lat_p99']:7.2f}s {r['errors']:>6}")
    print()
    for level, rows in table.items():
        ratio = rows["ours"]["tok_s"] / rows["llama_cpp.server"]["tok_s"] if rows["llama_cpp.server"]["tok_s"] else float("nan")
        print(f"throughput ratio at {level:>2} clients: ours / llama_cpp.server = {ratio:.2f}x (target >= 0.9x)")
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "model": gguf,
                                        "load_start": load_start, "load_end": load_end,
                                        "table": {str(k): v for k, v in table.items()}}, indent=2, default=str))
        print(f"wrote {args.out}")
    print(f"server logs in {tmp}")


if __name__ == "__main__":
    main()
