"""Several sequences decoded together in one ONNX Runtime session: a batch dimension in the KV buffers.

The ONNX counterpart of ``llamacpp_batch.py``, over the session an already-open
:class:`~distillm_edge.backends.onnx_backend.OnnxBackend` loaded (no second copy of the weights).
It needs an export whose cache GroupQueryAttention updates in place (``backend.share_buffer``):

- :class:`BatchDecoder`: one zero-filled buffer per cache tensor, ``[n_seq, kv_heads, capacity,
  head_size]``; row ``r`` holds sequence ``r``, right-padded. ``prefill(row, tokens)`` runs one
  prompt alone over its row (batch 1, the row's slice bound as past and present);
  ``decode(tokens)`` feeds the next token of rows ``0..k-1`` in one run with batch ``k``: the
  ``attention_mask`` row ``b`` has ``length_b + 1`` ones, so GQA's ``seqlens_k`` (its sum - 1)
  gives each row its own write position, rotary position and attention span, and
  ``total_sequence_length`` (its width) is the longest. The rows in use are kept packed at the
  front (``move`` copies a row's valid prefix), so a run never computes an idle row.
- :func:`batch_generate`: greedy decoding of k prompts together, timed (equal work per step, as
  ``llamacpp_batch.batch_generate``); ``benchmarks/backend_overhead.py --batch 4`` sets it against
  onnxruntime-genai's batched ``Generator``.
- :class:`OnnxSlotScheduler`: continuous batching in one background thread, with the
  ``SlotScheduler`` interface ``serve``'s engine uses: ``stream(ids, ...)`` queues a sequence and
  yields its tokens; each step either prefills one admitted prompt or decodes every running
  sequence together; finished or cancelled sequences free their row at once.

Prompts are never batched with other sequences (GQA takes batch 1 for a prompt after a cache), and a
sequence's logits do not depend on what else runs: the tests compare batched tokens and logits with
``OnnxBackend.stream`` one sequence at a time.

Why we batch ourselves instead of using onnxruntime-genai's batching (checked with onnxruntime-genai
0.18.0 and onnxruntime 1.32.0 on CPU, on our SmolLM2-135M int4 export, 2026-11-30):

- ``og.Engine`` (requests, turns, ``Engine.run``) has two schedulers. Its *dynamic* batching
  (continuous: a request joins or leaves between steps) needs a paged KV cache, i.e. a graph built
  with ``PagedAttention``, which the model builder emits only for CUDA fp16/bf16 or WebGPU fp16
  (``models/builders/base.py``: "PagedAttention (use_paged_attention=true) requires CUDA ..."); on our
  CPU export ``engine.dynamic_batching`` fails with "Paged cache input must have rank four and a
  static physical head width: past_key_values.0.key". What CPU gets is its *static* batching: the
  requests waiting when a batch starts run together in one contiguous KV allocation until the last
  of them ends ("a row cannot be released independently from its shared contiguous cache
  allocation"). A request arriving while a batch decodes waits for that whole batch, finished rows
  included: A decoding 64 tokens, B arriving after A's 4th token: under the Engine B's first token
  came after all 60 of A's remaining tokens (273 ms), under :class:`OnnxSlotScheduler` after 2 (36 ms;
  idle, 2026-11-30). For a server, one long answer would hold every later request for its whole
  length. The static Engine also refuses a per-request seed ("A per-turn seed requires an Engine
  configured for dynamic batching"), so OpenAI's ``seed`` could not be honoured. It does give the
  same greedy tokens, honours ``Request.cancel_turn`` and per-request temperature / top-p / max
  tokens. Its throughput is not the reason: a batch of 8 runs in waves under the Engine (its rows'
  first tokens spread over 0.7-5 s), and counted over all tokens (prefill + decode) ours was 1.22x /
  1.11x the Engine at 64- / 1024-token prompts (idle). An earlier "Engine decodes 1.5-1.8x faster at
  8 rows" counted the tokens of rows that ran ahead before the last row started.
- ``og.Generator`` with ``batch_size=k`` takes its k prompts once ("AppendTokens can only be called
  once for batch_size > 1"; ``rewind_to`` only to 0): no sequence can join or leave a running batch.

Reproduce (prints the late request's wait, the refusals, and the three batch paths side by side)::

    python benchmarks/backend_overhead.py --backends onnx --lengths 64 --batch 1,4,8 --arrivals

Test: ``pytest tests/backends/test_onnx_batch.py tests/serve/test_onnx_serve.py``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from distillm_edge.backends.slots import DONE, Request, Scheduler, batch_timings
from distillm_edge.errors import UserError

_CACHE_IO = (("past_key_names", "present_key_names"), ("past_value_names", "present_value_names"))


class BatchDecoder:
    """``n_seq`` right-padded sequences of at most ``n_ctx_per_seq`` tokens over ``backend``'s session."""

    def __init__(self, backend, n_seq: int, n_ctx_per_seq: int):
        if n_seq < 1 or n_ctx_per_seq < 2:
            raise ValueError(f"need n_seq >= 1 and n_ctx_per_seq >= 2, got {n_seq} and {n_ctx_per_seq}")
        if not backend.share_buffer:
            raise UserError(f"{backend.path}: batched ONNX decoding needs an export whose KV cache "
                            "GroupQueryAttention updates in place (genai_config past_present_share_buffer); "
                            "this one decodes one sequence per thread instead.")
        self.backend = backend
        self.n_seq = n_seq
        self.n_ctx_per_seq = min(n_ctx_per_seq, backend.context_length or n_ctx_per_seq)
        # a sliding-window layer (Gemma-3) needs at least its window's rows, whatever the row's context
        windows = getattr(backend, "window_capacity", {})
        self.cache = [np.zeros((n_seq, backend.kv_heads, max(self.n_ctx_per_seq, windows.get(layer, 0)),
                                backend.head_size), dtype=backend._kv_dtype)
                      for layer in range(backend.num_layers) for _ in range(2)]
        self.lengths = [0] * n_seq  # valid positions in each row
        self._bindings: dict[int, tuple] = {}  # batch k -> (binding over rows 0..k-1, its logits buffer)

    def _bind(self, rows: slice, logits: np.ndarray | None):
        import onnxruntime as ort

        b = self.backend
        binding = b.session.io_binding()
        if logits is None:
            binding.bind_output(b._out["logits"], "cpu")
        else:
            binding.bind_ortvalue_output(b._out["logits"], ort.OrtValue.ortvalue_from_numpy(logits))
        for layer in range(b.num_layers):
            for i, (past, present) in enumerate(_CACHE_IO):
                value = ort.OrtValue.ortvalue_from_numpy(self.cache[2 * layer + i][rows])  # a view: no copy
                binding.bind_ortvalue_input(b._in[past] % layer, value)
                binding.bind_ortvalue_output(b._out[present] % layer, value)
        return binding

    def _check(self, row: int, extra: int) -> None:
        if not 0 <= row < self.n_seq:
            raise ValueError(f"row {row} outside 0..{self.n_seq - 1}")
        if self.lengths[row] + extra > self.n_ctx_per_seq:
            raise ValueError(f"row {row} would reach {self.lengths[row] + extra} tokens, beyond its "
                             f"context of {self.n_ctx_per_seq}")

    def prefill(self, row: int, tokens: Sequence[int]) -> np.ndarray:
        """Start sequence ``row`` with the prompt ``tokens`` (run alone); the logits after it [V]."""
        if not tokens:
            raise ValueError("cannot prefill an empty prompt")
        self.lengths[row] = 0
        self._check(row, len(tokens))
        b = self.backend
        binding = self._bind(slice(row, row + 1), None)
        binding.bind_cpu_input(b._in["input_ids"], np.asarray([list(tokens)], dtype=np.int64))
        binding.bind_cpu_input(b._in["attention_mask"], np.ones((1, len(tokens)), dtype=np.int64))
        if "position_ids" in b._input_names:
            binding.bind_cpu_input("position_ids", np.arange(len(tokens), dtype=np.int64)[None])
        b.session.run_with_iobinding(binding)
        self.lengths[row] = len(tokens)
        return binding.get_outputs()[0].numpy()[0, -1].copy()

    def decode(self, tokens: Sequence[int]) -> np.ndarray:
        """Feed ``tokens[r]`` to row ``r`` for ``r < k = len(tokens)``, in one run; the logits [k, V]."""
        k = len(tokens)
        if not 1 <= k <= self.n_seq:
            raise ValueError(f"{k} tokens for a decoder with {self.n_seq} rows")
        for row in range(k):
            self._check(row, 1)
        if k not in self._bindings:
            logits = np.zeros((k, 1, self.backend.vocab_size), dtype=np.float32)
            self._bindings[k] = (self._bind(slice(0, k), logits), logits)
        binding, logits = self._bindings[k]
        b = self.backend
        total = np.asarray(self.lengths[:k]) + 1
        mask = (np.arange(total.max())[None] < total[:, None]).astype(np.int64)
        binding.bind_cpu_input(b._in["input_ids"], np.asarray(tokens, dtype=np.int64)[:, None])
        binding.bind_cpu_input(b._in["attention_mask"], mask)
        if "position_ids" in b._input_names:
            binding.bind_cpu_input("position_ids", (total - 1)[:, None].astype(np.int64))
        b.session.run_with_iobinding(binding)
        for row in range(k):
            self.lengths[row] += 1
        return logits[:, -1].copy()

    def move(self, src: int, dst: int) -> None:
        """Copy sequence ``src`` into row ``dst`` (its valid prefix only) and free ``src``."""
        n = self.lengths[src]
        for buffer in self.cache:
            buffer[dst, :, :n] = buffer[src, :, :n]
        self.lengths[dst], self.lengths[src] = n, 0


def batch_generate(decoder: BatchDecoder, prompts: Sequence[Sequence[int]], new_tokens: int,
                   clock=time.perf_counter) -> dict:
    """Greedy-decode exactly ``new_tokens`` for every prompt (EOS ignored: equal work per step): each
    prompt is prefilled alone into its row, then one run per step decodes all of them."""
    if not 1 <= len(prompts) <= decoder.n_seq:
        raise ValueError(f"{len(prompts)} prompts for a decoder with {decoder.n_seq} rows")
    start = clock()
    tokens = [[int(np.argmax(decoder.prefill(row, prompt)))] for row, prompt in enumerate(prompts)]
    first = clock()
    for _ in range(1, new_tokens):
        for row, logits in zip(tokens, decoder.decode([t[-1] for t in tokens]), strict=True):
            row.append(int(np.argmax(logits)))
    end = clock()
    return batch_timings(tokens, new_tokens, start, first, end)


class OnnxSlotScheduler(Scheduler):
    """Continuous batching: up to ``n_slots`` sequences decoded together, fed by one thread
    (``backends.slots``: the request queue, the stream, the thread loop)."""

    label = "ONNX slot scheduler"

    def __init__(self, backend, n_slots: int, n_ctx_per_slot: int):
        self.decoder = BatchDecoder(backend, n_slots, n_ctx_per_slot)
        self.eos_token_ids = backend.eos_token_ids
        self._active: list[Request] = []  # request i owns decoder row i (rows kept packed)
        self._start(n_slots, self.decoder.n_ctx_per_seq, "onnx-slots")

    def _finish(self, request: Request, item=DONE) -> None:
        if request.slot >= 0:  # keep rows packed: the last active sequence moves into the freed row
            row, last = request.slot, len(self._active) - 1
            if row != last:
                self.decoder.move(last, row)
                self._active[row] = self._active[last]
                self._active[row].slot = row
            self._active.pop()
            request.slot = -1
        request.out.put(item)

    def _step(self) -> None:
        """One run: either one admitted prompt alone, or the next token of every running sequence."""
        for request in [r for r in self._active if r.stopped()]:
            self._finish(request)
        self._prefill_turn = not self._prefill_turn  # alternate, so running streams keep flowing
        admitted = None
        with self._wake:
            self._drop_stopped_waiting()
            if self._waiting and len(self._active) < self.n_slots and (self._prefill_turn or not self._active):
                admitted = self._waiting.popleft()
        if admitted is not None:
            admitted.slot = len(self._active)
            self._active.append(admitted)
            self._emit(admitted, self.decoder.prefill(admitted.slot, admitted.prompt))
        elif self._active:  # every active sequence is decoding (a prefill emits its first token at once)
            rows = self.decoder.decode([r.todo[-1] for r in self._active])
            for request, row in zip(list(self._active), rows, strict=True):
                self._emit(request, row)
