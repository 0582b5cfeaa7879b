"""Load behaviour of the server, made exact with a scripted backend whose tokens the test releases:

- beyond N running + Q queued requests the server answers 429 with ``Retry-After`` (and the
  admitted ones still complete);
- a client that disconnects mid-stream cancels its generation: the backend stream is closed
  early, the slot is free for the next request, and the audit log records the cancelled draft;
- the engine's admission counter never leaks, and a request waiting for a slot gives up when
  cancelled;
- ``/healthz`` answers 503 once the llama.cpp decode loop has stopped, without its internals.

Run: ``pytest tests/serve/test_load.py`` (seconds).
"""

from __future__ import annotations

import threading

import httpx
from serve_helpers import ScriptedBackend, running_server, wait_until

from distillm_edge.safety.audit import AuditLog
from distillm_edge.serve.engine import Engine

BODY = {"messages": [{"role": "user", "content": "How much water should I drink?"}], "stream": True}


def stream_in_thread(url: str, results: list, body: dict = BODY) -> threading.Thread:
    def run():
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
            results.append((r.status_code, r.read().decode()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_queue_overflow_gets_429_with_retry_after(tmp_path):
    backend = ScriptedBackend("Two litres a day.", gated=True)
    with running_server(backend, tmp_path, parallel=1, queue=1) as (url, svc):
        results: list = []
        threads = [stream_in_thread(url, results) for _ in range(2)]
        wait_until(lambda: svc.engine.admitted == 2 and svc.engine.running == 1, what="one running, one queued")
        assert httpx.get(f"{url}/healthz").json()["queue_depth"] == 1
        r = httpx.post(f"{url}/v1/chat/completions", json=BODY)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "queue_full"
        backend.release(1000)
        for t in threads:
            t.join(60)
        assert [status for status, _ in results] == [200, 200]
        assert all('"finish_reason": "stop"' in text and text.endswith("data: [DONE]\n\n") for _, text in results)
        assert svc.engine.admitted == 0
        metrics = httpx.get(f"{url}/metrics").text
        assert 'status="429"} 1.0' in metrics


def test_disconnect_mid_stream_cancels_and_frees_the_slot(tmp_path):
    script = "A long answer " * 20
    backend = ScriptedBackend(script, gated=True)
    with running_server(backend, tmp_path, parallel=1, queue=0) as (url, svc):
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=BODY, timeout=60) as r:
            lines = r.iter_lines()
            backend.release(3)
            seen = [line for line, _ in zip(lines, range(4)) if line]
            assert any('"content": "A"' in line for line in seen)
        # the client is gone: the server sets the request's cancel event
        wait_until(lambda: svc.cancels and all(c.is_set() for c in svc.cancels) or svc.engine.admitted == 0,
                   what="the server to notice the disconnect")
        backend.release(10_000)  # the next token lets the worker see the cancel
        wait_until(lambda: svc.engine.admitted == 0 and backend.streams_closed == 1, what="the slot to be freed")
        log = AuditLog(svc.cfg.audit_db)
        [row] = list(log.rows())
        assert row["reason"].startswith("cancelled") and row["final_text"] is None
        assert 3 <= row["settings"]["completion_tokens"] < len(script)
        assert log.verify().ok
        log.close()
        after = httpx.post(f"{url}/v1/chat/completions", json={**BODY, "stream": False, "max_tokens": 5})
        assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"] == "A lon"


def test_engine_admission_and_cancel_while_waiting():
    backend = ScriptedBackend("abc", gated=True)
    engine = Engine(backend, slots=1, queue=1)
    assert engine.admit() and engine.admit() and not engine.admit()
    first = engine.view(threading.Event()).stream([1], 3)
    next_token = threading.Thread(target=lambda: next(first))
    next_token.start()
    wait_until(lambda: engine.running == 1, what="the first stream to take the slot")
    cancel = threading.Event()
    waiting = engine.view(cancel).stream([1], 3)
    out: list = []
    t = threading.Thread(target=lambda: out.extend(waiting))
    t.start()
    cancel.set()
    t.join(10)
    assert out == [] and not t.is_alive()  # gave up waiting for the slot
    backend.release(3)
    next_token.join(10)
    first.close()
    assert engine.running == 0
    engine.release()
    engine.release()
    assert engine.admitted == 0 and engine.admit()


def test_healthz_reports_a_stopped_decode_loop(tmp_path):
    class StoppedScheduler:  # what SlotScheduler looks like after a llama_decode failure
        failure = "RuntimeError: llama_decode returned -3"
        running = waiting = 0

        def close(self):
            pass

    with running_server(ScriptedBackend(), tmp_path) as (url, svc):
        assert httpx.get(f"{url}/healthz").status_code == 200
        svc.engine.scheduler = StoppedScheduler()
        r = httpx.get(f"{url}/healthz")
        assert r.status_code == 503 and r.json()["status"] == "error" and "llama_decode" not in r.text
