"""Several sequences decoded together in one llama.cpp context: one model, one KV cache, N slots.

llama.cpp's own server serves concurrent requests this way: every sequence has a ``seq_id`` and
its own cells in one KV cache, and each ``llama_decode`` call carries the next token of every
running sequence (plus chunks of newly admitted prompts) in one ``llama_batch``, so the weights
are read once per step for all of them. This module does the same through llama-cpp-python's
low-level API, over the model an already-open :class:`LlamaCppBackend` loaded (no second copy of
the weights: only a second context, whose KV cache holds ``n_seq`` sequences).

- :class:`MultiSequenceDecoder`: the context. ``decode(items)`` feeds tokens to any sequences in
  one call and returns the next-token logits of the sequences that asked for them;
  ``clear(seq)`` drops a sequence's KV cells.
- :func:`batch_generate`: greedy decoding of k prompts together (what ``bench`` times at b1/b4/b8;
  the test compares its tokens with one-at-a-time ``LlamaCppBackend.stream``).
- :class:`SlotScheduler`: continuous batching in one background thread, as llama.cpp's server
  slots do: ``stream(ids, ...)`` queues a sequence, waits for a free slot and yields its tokens
  as they are decoded; finished or cancelled sequences free their slot at once, and a slot keeps
  its KV cells so the next prompt sharing their prefix (the chat template's system turn) only
  prefills the rest. It has the
  ``Backend.stream`` signature plus ``cancel``, so ``backends.generate.stream_text`` runs over it.

Test: ``pytest tests/backends/test_llamacpp_batch.py`` (slow: the embedded SmolLM2 GGUF).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence

import numpy as np

from distillm_edge.backends.base import common_prefix
from distillm_edge.backends.slots import DONE, Request, Scheduler, batch_timings
from distillm_edge.errors import UserError


class MultiSequenceDecoder:
    """A llama.cpp context with ``n_seq`` independent sequences over ``backend``'s loaded model."""

    def __init__(self, backend, n_seq: int, n_ctx_per_seq: int, n_batch: int = 512, threads: int = 0):
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaContext

        if n_seq < 1 or n_ctx_per_seq < 2:
            raise ValueError(f"need n_seq >= 1 and n_ctx_per_seq >= 2, got {n_seq} and {n_ctx_per_seq}")
        self._lib = llama_cpp
        threads = threads or backend.info.threads or 1
        # the backend's own context parameters (flash attention off, KV types, RoPE...), so a sequence
        # decodes here exactly as it does on the backend; only the sizes and sequence count change
        params = llama_cpp.llama_context_params.from_buffer_copy(backend.native.context_params)
        params.n_ctx = n_seq * n_ctx_per_seq
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False  # each sequence attends over its own cells only (independent prompts)
        params.no_perf = False
        try:
            self.ctx = LlamaContext(model=backend.native._model, params=params, verbose=False)
        except ValueError as exc:
            raise UserError(f"{backend.info.path}: llama.cpp could not create a {n_seq}-sequence context "
                            f"of {n_ctx_per_seq} tokens each ({exc}); lower the parallel slots or context.") from None
        self._batch = LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=False)
        # llama.cpp pads the context, so each sequence may get more cells than asked: use what it has
        self.n_seq, self.n_batch = n_seq, n_batch
        self.n_ctx_per_seq = min(n_ctx_per_seq, int(llama_cpp.llama_n_ctx_seq(self.ctx.ctx)))
        self.vocab_size = backend.vocab_size
        self.eos_token_ids = backend.eos_token_ids

    def clear(self, seq: int) -> None:
        """Drop every KV cell of sequence ``seq`` (its slot can take a new sequence)."""
        self._lib.llama_memory_seq_rm(self.ctx.memory, seq, 0, -1)

    def drop_from(self, seq: int, pos: int) -> bool:
        """Drop the cells of ``seq`` at positions >= ``pos``; if this memory cannot cut a suffix,
        drop them all and return False."""
        if self._lib.llama_memory_seq_rm(self.ctx.memory, seq, pos, -1):
            return True
        self.clear(seq)
        return pos == 0

    def decode(self, items: Sequence[tuple[int, Sequence[int], int, bool]]) -> dict[int, np.ndarray]:
        """One ``llama_decode`` over ``(seq, tokens, first_pos, want_logits)`` items.

        The tokens of all items must fit in ``n_batch``. Returns ``{seq: logits of the token after
        the item's last token}`` (float32 [V], a copy) for the items with ``want_logits``.
        """
        batch = self._batch.batch
        n, wanted = 0, []
        for seq, tokens, pos0, want in items:
            if not 0 <= seq < self.n_seq:
                raise ValueError(f"sequence id {seq} outside 0..{self.n_seq - 1}")
            if pos0 + len(tokens) > self.n_ctx_per_seq:
                raise ValueError(f"sequence {seq} would reach position {pos0 + len(tokens)}, beyond its "
                                 f"context of {self.n_ctx_per_seq} tokens")
            for j, token in enumerate(tokens):
                if n >= self.n_batch:
                    raise ValueError(f"more than n_batch={self.n_batch} tokens in one decode call")
                batch.token[n] = int(token)
                batch.pos[n] = pos0 + j
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = want and j == len(tokens) - 1
                n += 1
            if want:
                wanted.append((seq, n - 1))
        if n == 0:
            return {}
        batch.n_tokens = n
        code = self._lib.llama_decode(self.ctx.ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code} for a batch of {n} tokens over "
                               f"{len(items)} sequences (KV cache full or decode error)")
        out = {}
        for seq, i in wanted:
            ptr = self._lib.llama_get_logits_ith(self.ctx.ctx, i)
            row = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.vocab_size,))
            out[seq] = row.copy()
        return out

    def close(self) -> None:
        if getattr(self, "ctx", None) is not None:
            self._batch.close()
            self.ctx.close()
            self.ctx = None


def _prefill(decoder: MultiSequenceDecoder, seq: int, tokens: Sequence[int], pos0: int = 0) -> np.ndarray:
    """Feed one sequence's prompt alone, in ``n_batch`` chunks; the logits after its last token."""
    logits = None
    for start in range(0, len(tokens), decoder.n_batch):
        chunk = tokens[start : start + decoder.n_batch]
        last = start + len(chunk) == len(tokens)
        logits = decoder.decode([(seq, chunk, pos0 + start, last)]).get(seq)
    return logits


def batch_generate(decoder: MultiSequenceDecoder, prompts: Sequence[Sequence[int]], new_tokens: int,
                   clock=time.perf_counter) -> dict:
    """Greedy-decode exactly ``new_tokens`` for every prompt (EOS ignored: equal work per step): each
    prompt is prefilled alone, then one ``llama_decode`` per step carries the next token of every
    sequence. Tokens and timings, as ``bench.batch`` reports them."""
    if not 1 <= len(prompts) <= decoder.n_seq:
        raise ValueError(f"{len(prompts)} prompts for a decoder with {decoder.n_seq} sequences")
    start = clock()
    tokens = []
    for seq, prompt in enumerate(prompts):
        decoder.clear(seq)
        tokens.append([int(np.argmax(_prefill(decoder, seq, prompt)))])
    first = clock()
    for step in range(1, new_tokens):
        rows = decoder.decode([(seq, [tokens[seq][-1]], len(prompt) + step - 1, True)
                               for seq, prompt in enumerate(prompts)])
        for seq in range(len(prompts)):
            tokens[seq].append(int(np.argmax(rows[seq])))
    end = clock()
    return batch_timings(tokens, new_tokens, start, first, end)


class SlotScheduler(Scheduler):
    """Continuous batching: up to ``n_slots`` sequences share one context, fed by one thread
    (``backends.slots``: the request queue, the stream, the thread loop)."""

    label = "llama.cpp slot scheduler"

    def __init__(self, backend, n_slots: int, n_ctx_per_slot: int, n_batch: int = 512, threads: int = 0):
        self.decoder = MultiSequenceDecoder(backend, n_slots, n_ctx_per_slot, n_batch, threads)
        self.eos_token_ids = self.decoder.eos_token_ids
        self._active: dict[int, Request] = {}
        self._cached: list[list[int]] = [[] for _ in range(n_slots)]  # tokens in each slot's KV cells
        self.prefix_hits = 0  # prompt tokens not recomputed thanks to a slot's cached prefix
        self._start(n_slots, self.decoder.n_ctx_per_seq, "llama-slots")

    def _closed(self) -> None:
        self.decoder.close()

    def _finish(self, request: Request, item=DONE) -> None:
        if request.slot >= 0:  # the slot keeps its KV cells: the next prompt may share their prefix
            self._active.pop(request.slot, None)
            request.slot = -1
        request.out.put(item)

    def _admit(self) -> None:
        """Give free slots to waiting requests, each to the free slot whose cached tokens share the
        longest prefix with its prompt (as llama.cpp's server does); only the rest is prefilled."""
        self._drop_stopped_waiting()
        free = [s for s in range(self.n_slots) if s not in self._active]
        while free and self._waiting:
            request = self._waiting.popleft()
            shared = {slot: common_prefix(self._cached[slot], request.prompt) for slot in free}
            slot = max(free, key=lambda s: shared[s])
            free.remove(slot)
            keep = min(shared[slot], len(request.prompt) - 1)  # feed at least one token: its logits
            if not self.decoder.drop_from(slot, keep):
                keep = 0
            del self._cached[slot][keep:]
            request.slot, request.pos, request.todo = slot, keep, request.prompt[keep:]
            self.prefix_hits += keep
            self._active[slot] = request

    def _step(self) -> None:
        """One decode call: either one admitted prompt (chunk) alone, or the next token of every
        running sequence. Prompts are never mixed with other sequences' tokens, so a sequence's
        logits do not depend on what else is running (llama.cpp splits mixed batches into
        different micro-batches, which moves near-tied greedy choices)."""
        for request in [r for r in self._active.values() if r.stopped()]:
            self._finish(request)
        prefill = [r for r in self._active.values() if len(r.todo) > 1 or r.generated == 0]
        decoding = [r for r in self._active.values() if len(r.todo) == 1 and r.generated > 0]
        self._prefill_turn = not self._prefill_turn  # alternate, so running streams keep flowing
        if prefill and (self._prefill_turn or not decoding):
            request = prefill[0]
            chunk = request.todo[: self.decoder.n_batch]
            items = [(request, chunk)]
        else:
            items = [(request, request.todo) for request in decoding]
        if not items:
            return
        logits = self.decoder.decode([(r.slot, chunk, r.pos, len(chunk) == len(r.todo)) for r, chunk in items])
        for request, chunk in items:
            request.pos += len(chunk)
            request.todo = request.todo[len(chunk):]
            self._cached[request.slot].extend(chunk)
            row = logits.get(request.slot)
            if row is not None:
                self._emit(request, row)
