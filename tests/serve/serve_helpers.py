"""Helpers for the serve tests: a real server (uvicorn in a thread, 127.0.0.1, a free port) over a
real tiny model or a scripted backend whose tokens are released on demand (for exact queue,
disconnect and red-flag scenarios without timing assumptions).

Used by ``tests/serve/test_*.py`` (``from serve_helpers import ...``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from distillm_edge.backends.base import BackendInfo

EOS = 256


class ScriptedBackend:
    """Token i < 256 is byte i, 256 is EOS. ``stream`` replays ``script``; with ``gate`` set up, each
    token waits until the test calls ``release(n)``. Thread-safe like the real torch/ONNX backends."""

    eos_token_ids = frozenset({EOS})
    vocab_size = 257

    def __init__(self, script: str = "Rest and fluids.", gated: bool = False):
        self.script = list(script.encode()) + [EOS]
        self.info = BackendInfo(backend="scripted", model="scripted", path="")
        self._tokens = threading.Semaphore(0) if gated else None
        self.streams_closed = 0

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._tokens.release()

    def tokenize(self, text, add_special_tokens=True):
        return list(text.encode())

    def detokenize(self, ids):
        return bytes(t for t in ids if t < 256).decode("utf-8", errors="replace")

    def chat_ids(self, messages, add_generation_prompt=True):
        return [b for m in messages for b in f"{m['role']}: {m['content']}\n".encode()]

    def stream(self, ids, max_new_tokens, temperature=0.0, seed=0, top_p=1.0):
        try:
            for token in self.script[:max_new_tokens]:
                if self._tokens is not None:
                    while not self._tokens.acquire(timeout=0.01):
                        pass
                yield token
        finally:
            self.streams_closed += 1

    def close(self):
        pass


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def running_server(backend, tmp_path: Path, **overrides):
    """Serve ``backend`` on 127.0.0.1:<free port>; yields (base_url, service)."""
    import uvicorn

    from distillm_edge.serve.app import create_app
    from distillm_edge.serve.config import ServeConfig
    from distillm_edge.serve.run import build_service, uvicorn_config

    cfg = ServeConfig(**{"port": 0, "audit_db": tmp_path / "audit.sqlite3", "parallel": 2, "queue": 2,
                         "ctx_per_slot": 1024, "max_prompt_tokens": 512, "max_tokens_limit": 256,
                         "default_max_tokens": 200, **overrides})
    svc = build_service(cfg, backend)
    server = uvicorn.Server(uvicorn_config(cfg, create_app(svc), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), what="uvicorn to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", svc
    finally:
        server.should_exit = True
        thread.join(60)


def disconnect_mid_stream(svc, url: str, question: str, max_tokens: int, what: str) -> None:
    """Start a streaming chat request, leave after its first content chunk (while it still holds its slot
    or row), and wait until the engine has freed it."""
    import httpx

    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=300, json={
            "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens, "temperature": 0,
            "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if '"content": "' in line and '"role"' not in line:
                break
        assert svc.engine.running == 1
    wait_until(lambda: svc.engine.running == 0 and svc.engine.admitted == 0, timeout=60,
               what=f"the disconnected stream to free its {what}")
