"""What the batched schedulers share: the request, its token stream, the decode thread, the token choice.

``llamacpp_batch.SlotScheduler`` (llama.cpp sequences in one context) and
``onnx_batch.OnnxSlotScheduler`` (rows of one ONNX Runtime session's KV buffers) both serve
concurrent streams from one background thread that decodes every running sequence together. They
differ only in how a sequence is admitted and how one decode call is made; this base holds the rest,
written once:

- :class:`Request`: one sequence — its prompt and sampling settings, the caller's ``cancel`` event,
  the queue its tokens go to, and the scheduler's bookkeeping (``slot``, ``pos``, ``todo``);
- :meth:`Scheduler.stream`: queue a sequence and yield its tokens as they are decoded; closing the
  generator or setting ``cancel`` frees its slot at the next step;
- :meth:`Scheduler.close` and the thread loop: a failed decode call ends every sequence with the
  error (never silently), and shutdown ends every waiting and running sequence;
- :func:`batch_timings`: the result of both modules' timed ``batch_generate``;
- :meth:`Scheduler._emit`: the next token from a row of logits (greedy, or sampled with the
  request's temperature, top-p and seeded generator, as ``Backend.stream`` does), then the end
  check (EOS or ``max_new_tokens``).

A subclass sets ``decoder``, ``eos_token_ids`` and ``label``, keeps its running requests in
``self._active`` (any container of requests) and implements ``_admit`` (under the lock), ``_step``
(one decode call) and ``_finish`` (free the slot, then ``_end``).

Test: ``pytest tests/backends/test_llamacpp_batch.py tests/backends/test_onnx_batch.py``.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from distillm_edge.backends.base import log_softmax, sample

DONE = object()  # the end of a request's token stream


def batch_timings(tokens: list[list[int]], new_tokens: int, start: float, first: float, end: float) -> dict:
    """What ``batch_generate`` (llama.cpp and ONNX) reports to ``bench``: the tokens, the prefill time,
    and decode / total tokens per second over all k sequences."""
    k = len(tokens)
    return {
        "tokens": tokens,
        "prefill_s": first - start,
        "decode_tps": k * (new_tokens - 1) / (end - first) if new_tokens > 1 and end > first else float("nan"),
        "total_tps": k * new_tokens / (end - start) if end > start else float("nan"),
    }


@dataclass
class Request:
    prompt: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    rng: np.random.Generator
    cancel: threading.Event  # the caller's: set when its client goes away
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    slot: int = -1  # the scheduler's slot or row (-1: none)
    pos: int = 0  # tokens of this sequence already in the KV cache
    todo: list[int] = field(default_factory=list)  # tokens still to feed (the prompt's rest, then the last sample)
    generated: int = 0
    closed: bool = False  # the consumer stopped reading (generator closed)

    def stopped(self) -> bool:
        return self.closed or self.cancel.is_set()


class Scheduler:
    """Continuous batching over one decoder, fed by one background thread (see the module docstring)."""

    label = "slot scheduler"
    eos_token_ids: Iterable[int] = ()

    def _start(self, n_slots: int, n_ctx_per_slot: int, thread_name: str) -> None:
        self.n_slots, self.n_ctx_per_slot = n_slots, n_ctx_per_slot
        self._waiting: deque[Request] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._prefill_turn = False
        self.failure: str | None = None
        self._thread = threading.Thread(target=self._loop, name=thread_name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _requests(self) -> list[Request]:
        active = self._active.values() if isinstance(self._active, dict) else self._active
        return list(active)

    def stream(self, ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
               top_p: float = 1.0, cancel: threading.Event | None = None) -> Iterator[int]:
        """Yield the sequence's sampled tokens (stops after EOS or ``max_new_tokens``); closing the
        generator or setting ``cancel`` frees its slot."""
        if not ids:
            raise ValueError("cannot generate from an empty prompt")
        if len(ids) + max_new_tokens > self.n_ctx_per_slot:
            raise ValueError(f"{len(ids)} prompt tokens + {max_new_tokens} new tokens exceed the slot "
                             f"context of {self.n_ctx_per_slot}")
        request = Request(list(ids), max_new_tokens, temperature, top_p, np.random.default_rng(seed),
                          cancel or threading.Event())
        with self._wake:
            if self._stopping:
                raise RuntimeError(f"the {self.label} is shut down")
            self._waiting.append(request)
            self._wake.notify()
        try:
            while True:
                item = request.out.get()
                if item is DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.closed = True  # no-op when it finished; otherwise the loop frees the slot
            with self._wake:
                self._wake.notify()

    def close(self, timeout: float = 30.0) -> None:
        """Cancel every sequence and stop the thread (then :meth:`_closed` frees the decoder)."""
        with self._wake:
            self._stopping = True  # the loop ends every waiting and running sequence at its next step
            self._wake.notify()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._closed()

    # --- the decode thread: hooks ----------------------------------------------------------------

    def _closed(self) -> None:
        """The thread has stopped: free what the decoder holds (default: nothing)."""

    def _admit(self) -> None:
        """Under the lock: move waiting requests into free slots (default: ``_step`` does it)."""

    def _step(self) -> None:
        raise NotImplementedError

    def _finish(self, request: Request, item=DONE) -> None:
        raise NotImplementedError

    # --- the decode thread -----------------------------------------------------------------------

    def _drop_stopped_waiting(self) -> None:
        """Under the lock: end the waiting requests whose caller has gone."""
        for request in [r for r in self._waiting if r.stopped()]:
            self._waiting.remove(request)
            request.out.put(DONE)

    def _emit(self, request: Request, row: np.ndarray) -> None:
        """The next token from ``row`` (the sequence's next-token logits), sent to its stream."""
        if request.temperature <= 0:
            token = int(np.argmax(row))
        else:
            token = sample(log_softmax(row), request.temperature, request.rng, request.top_p)
        request.generated += 1
        request.out.put(token)
        if token in self.eos_token_ids or request.generated >= request.max_new_tokens:
            self._finish(request)
        else:
            request.todo = [token]

    def _loop(self) -> None:
        try:
            while True:
                with self._wake:
                    while not self._stopping and not self._waiting and not self._active:
                        self._wake.wait()
                    if self._stopping:
                        for request in self._waiting:
                            request.out.put(DONE)
                        self._waiting.clear()
                        for request in self._requests():
                            self._finish(request)
                        return
                    self._admit()
                self._step()
        except Exception as exc:  # a decode failure ends every sequence with the error, never silently
            self.failure = f"{type(exc).__name__}: {exc}"
            with self._wake:
                self._stopping = True
                for request in [*self._waiting, *self._requests()]:
                    request.out.put(RuntimeError(f"{self.label} stopped: {self.failure}"))
                self._waiting.clear()
                self._active.clear()
