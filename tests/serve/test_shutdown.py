"""Faults under load: `distillm-edge serve` in a subprocess (embedded SmolLM2 GGUF) with streaming
clients in flight, then SIGTERM (graceful: the app's shutdown runs, every admitted exchange in the audit log, as a
finished or a cancelled draft) or SIGKILL (no shutdown at all). Either way the hash-chained audit
log verifies afterwards.

Run: ``pytest tests/serve/test_shutdown.py`` (slow-marked: two server processes, ~1 min on 2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest
from serve_helpers import wait_until

from distillm_edge.safety.audit import AuditLog

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from distillm_edge.cli import main; main()", "serve", "--port", str(port),
           "--threads", "1", "--parallel", "2", "--queue", "8", "--ctx-per-slot", "1024",
           "--max-prompt-tokens", "512", "--max-tokens-limit", "512", "--audit-db", str(db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stdout.read().decode()[-2000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=300, what="the server to start")
    return proc


def start_streams(url: str, n: int, first_chunks: threading.Semaphore) -> list[threading.Thread]:
    def run(i: int):
        body = {"messages": [{"role": "user", "content": f"Explain in detail how to manage asthma, part {i}."}],
                "max_tokens": 400, "temperature": 0, "stream": True}
        try:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as r:
                lines = r.iter_lines()
                for line in lines:
                    if '"content"' in line and '"role"' not in line:
                        first_chunks.release()
                        break
                for _ in lines:
                    pass
        except httpx.HTTPError:
            pass  # the server went away: expected here

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def check_log(db, at_least: int) -> list[dict]:
    log = AuditLog(db)
    try:
        report = log.verify()
        assert report.ok, report.problems
        rows = list(log.rows())
    finally:
        log.close()
    assert len(rows) >= at_least and all(r["action"] == "api_response" for r in rows)
    return rows


def test_sigterm_during_load_finishes_or_cancels_and_logs_everything(tmp_path):
    db, port = tmp_path / "audit.sqlite3", free_port()
    proc = start_server(db, port)
    first = threading.Semaphore(0)
    threads = start_streams(f"http://127.0.0.1:{port}", 4, first)
    for _ in range(2):  # both slots are generating, two requests wait in the queue
        assert first.acquire(timeout=300)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=180)
    # uvicorn drains, runs the app's shutdown, then re-raises the signal it caught
    assert proc.returncode in (0, -signal.SIGTERM), out.decode()[-2000:]
    assert "Application shutdown complete" in out.decode()
    for t in threads:
        t.join(60)
    rows = check_log(db, 4)
    assert len(rows) == 4  # every admitted exchange, finished or cancelled
    for row in rows:
        assert row["reason"] is None or row["reason"].startswith("cancelled"), json.dumps(row)[:500]


def test_sigkill_during_load_leaves_a_verifying_log(tmp_path):
    db, port = tmp_path / "audit.sqlite3", free_port()
    proc = start_server(db, port)
    url = f"http://127.0.0.1:{port}"
    for _ in range(2):
        r = httpx.post(f"{url}/v1/chat/completions", timeout=300,
                       json={"messages": [{"role": "user", "content": "Name one vitamin."}], "max_tokens": 8})
        assert r.status_code == 200
    first = threading.Semaphore(0)
    threads = start_streams(url, 4, first)
    assert first.acquire(timeout=300)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    for t in threads:
        t.join(60)
    check_log(db, 2)
