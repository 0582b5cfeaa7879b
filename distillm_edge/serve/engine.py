"""The server's generation engine: admission (N slots + a bounded queue) over one loaded model.

``Engine.admit()`` reserves a place for a request (a running slot or a queue place) or refuses
(the HTTP layer answers 429); ``Engine.release()`` gives it back. ``Engine.view(cancel)`` returns
a per-request stand-in for the backend whose ``stream`` runs through the slots, so
``backends.generate.stream_text`` (the shared token-to-text loop) drives it unchanged:

- llama.cpp: a :class:`~distillm_edge.backends.llamacpp_batch.SlotScheduler` decodes up to N
  sequences in one context (one model, one KV cache with N sequences), like llama.cpp's server;
- ONNX Runtime (exports whose KV cache GroupQueryAttention updates in place): an
  :class:`~distillm_edge.backends.onnx_batch.OnnxSlotScheduler` decodes up to N sequences in one
  session run per step (a batch dimension in the KV buffers);
- torch / other ONNX exports: up to N threads stream from the one loaded model at once (both
  runtimes run concurrent inference calls on one model; each stream keeps its own KV cache).

A request waiting for a slot notices ``cancel`` (client gone, shutdown) while it waits.

Test: ``pytest tests/serve/test_engine.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence


class Engine:
    def __init__(self, backend, slots: int, queue: int, ctx_per_slot: int = 2048, threads: int = 0):
        self.backend = backend
        self.slots, self.capacity = slots, slots + queue
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self.scheduler = None
        if backend.info.backend == "gguf":
            from distillm_edge.backends.llamacpp_batch import SlotScheduler

            self.scheduler = SlotScheduler(backend, slots, ctx_per_slot, threads=threads or backend.info.threads)
            self.ctx_per_slot = self.scheduler.n_ctx_per_slot
        elif backend.info.backend == "onnx" and getattr(backend, "share_buffer", False):
            from distillm_edge.backends.onnx_batch import OnnxSlotScheduler

            self.scheduler = OnnxSlotScheduler(backend, slots, ctx_per_slot)
            self.ctx_per_slot = self.scheduler.n_ctx_per_slot
        else:
            self._slots = threading.BoundedSemaphore(slots)
            self.ctx_per_slot = ctx_per_slot
        modes = {"gguf": "llama.cpp multi-sequence batch", "onnx": "ONNX Runtime batched decode"}
        self.mode = modes[backend.info.backend] if self.scheduler else "threads over one model"

    # --- admission -------------------------------------------------------------------------------

    def admit(self) -> bool:
        """Reserve a slot or queue place; False when all N + queue places are taken."""
        with self._lock:
            if self._admitted >= self.capacity:
                return False
            self._admitted += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._admitted -= 1

    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def running(self) -> int:
        return self.scheduler.running if self.scheduler else self._running

    @property
    def queued(self) -> int:
        """Admitted requests not generating yet (waiting for a slot, or being prepared)."""
        return max(0, self._admitted - self.running)

    # --- generation ------------------------------------------------------------------------------

    def view(self, cancel: threading.Event) -> _SlotView:
        return _SlotView(self, cancel)

    def _stream(self, ids: Sequence[int], max_new_tokens: int, temperature: float, seed: int, top_p: float,
                cancel: threading.Event) -> Iterator[int]:
        if self.scheduler is not None:
            yield from self.scheduler.stream(ids, max_new_tokens, temperature=temperature, seed=seed,
                                             top_p=top_p, cancel=cancel)
            return
        while not self._slots.acquire(timeout=0.05):
            if cancel.is_set():
                return
        with self._lock:
            self._running += 1
        try:
            yield from self.backend.stream(ids, max_new_tokens, temperature=temperature, seed=seed, top_p=top_p)
        finally:
            with self._lock:
                self._running -= 1
            self._slots.release()

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()


class _SlotView:
    """The backend as ``stream_text`` sees it for one request: its ``stream`` goes through the slots."""

    def __init__(self, engine: Engine, cancel: threading.Event):
        self._engine, self._cancel = engine, cancel

    def __getattr__(self, name):  # tokenize, detokenize, eos_token_ids, info, ...
        return getattr(self._engine.backend, name)

    def stream(self, ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
               top_p: float = 1.0) -> Iterator[int]:
        return self._engine._stream(ids, max_new_tokens, temperature, seed, top_p, self._cancel)
