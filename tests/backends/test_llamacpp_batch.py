"""Multi-sequence llama.cpp decoding (backends/llamacpp_batch.py) against the naive reference: each
prompt greedy-decoded alone through ``LlamaCppBackend`` (its own single-sequence context).

- one batched prefill gives bit-identical next-token logits to the single-sequence context;
- ``batch_generate`` over k prompts of different lengths gives the same greedy tokens as
  one-at-a-time ``stream`` (also when a small ``n_batch`` splits each prompt over several calls);
- the slot scheduler with fewer slots than concurrent streams gives the same tokens (also when a
  slot's cached prefix is reused), and a stream closed early or cancelled frees its slot;
- bad sequence ids, context overflow and over-long requests are refused.

Run: ``pytest tests/backends/test_llamacpp_batch.py`` (slow-marked: the embedded SmolLM2 GGUF, ~10 s).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from distillm_edge.backends.llamacpp_batch import MultiSequenceDecoder, SlotScheduler, batch_generate

pytestmark = pytest.mark.slow

QUESTIONS = ["Name one symptom of anemia.", "What is hypertension?",
             "How is asthma treated in children who also have eczema and a cough at night?", "Define sepsis."]
NEW = 12


@pytest.fixture(scope="module")
def gguf():
    from distillm_edge.backends import open_backend

    backend = open_backend("smollm2-135m-instruct", backend="gguf", threads=1, n_ctx=512)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def prompts(gguf):
    return [gguf.chat_ids([{"role": "user", "content": q}]) for q in QUESTIONS]


@pytest.fixture(scope="module")
def reference(gguf, prompts):
    """Naive reference: each prompt decoded alone by the backend's own single-sequence context,
    greedily, one token per llama_decode (as batched decoding does after the prompt)."""
    out = [list(gguf.stream(ids, NEW)) for ids in prompts]
    assert all(len(tokens) == NEW for tokens in out), "a reference stopped at EOS: pick longer questions"
    return out


def test_batched_prefill_logits_equal_single_sequence_context(gguf, prompts):
    decoder = MultiSequenceDecoder(gguf, n_seq=4, n_ctx_per_seq=128, threads=1)
    try:
        rows = decoder.decode([(i, ids, 0, True) for i, ids in enumerate(prompts)])
        assert sorted(rows) == [0, 1, 2, 3]
        for i, ids in enumerate(prompts):
            expected = gguf.next_token_logprobs(ids)[-1]
            got = rows[i] - rows[i].max()
            got = got - np.log(np.exp(got).sum())
            np.testing.assert_allclose(got, expected, atol=1e-4)
    finally:
        decoder.close()


@pytest.mark.parametrize("n_batch", [512, 16])  # 16: prompts are prefilled in chunks over several calls
def test_batch_generate_matches_one_at_a_time(gguf, prompts, reference, n_batch):
    decoder = MultiSequenceDecoder(gguf, n_seq=4, n_ctx_per_seq=128, n_batch=n_batch, threads=1)
    try:
        out = batch_generate(decoder, prompts, NEW)
        assert out["tokens"] == reference
        assert out["prefill_s"] > 0 and out["decode_tps"] > 0
        again = batch_generate(decoder, prompts[2:3], NEW)  # slots are cleared and reused
        assert again["tokens"] == reference[2:3]
    finally:
        decoder.close()


def test_scheduler_with_fewer_slots_than_streams(gguf, prompts, reference):
    scheduler = SlotScheduler(gguf, n_slots=2, n_ctx_per_slot=128, n_batch=32, threads=1)
    try:
        results: dict[int, list[int]] = {}
        events = [threading.Event() for _ in prompts]

        def run(i):
            results[i] = list(scheduler.stream(prompts[i], NEW, cancel=events[i]))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for i, ref in enumerate(reference):
            assert results[i] == ref
            assert not events[i].is_set()  # the caller's cancel event is the caller's to set

        hits = scheduler.prefix_hits
        for ids, ref in zip(prompts, reference):  # again, one by one: slots now hold a shared prefix
            assert list(scheduler.stream(ids, NEW)) == ref
        assert scheduler.prefix_hits > hits

        stream = scheduler.stream(prompts[0], 64)
        next(stream)
        assert scheduler.running == 1
        stream.close()  # the HTTP client went away
        cancel = threading.Event()
        cancelled = scheduler.stream(prompts[1], 64, cancel=cancel)
        next(cancelled)
        cancel.set()
        assert len(list(cancelled)) < 64
        deadline = time.monotonic() + 30
        while scheduler.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scheduler.running == 0 and scheduler.waiting == 0
        assert list(scheduler.stream(prompts[3], NEW)) == reference[3]
    finally:
        scheduler.close()


def test_refuses_bad_requests(gguf, prompts):
    scheduler = SlotScheduler(gguf, n_slots=1, n_ctx_per_slot=48, threads=1)
    try:
        with pytest.raises(ValueError, match="exceed the slot context"):
            next(scheduler.stream(prompts[0], 40))
        with pytest.raises(ValueError, match="empty prompt"):
            next(scheduler.stream([], 4))
        with pytest.raises(ValueError, match="outside"):
            scheduler.decoder.decode([(3, [1, 2], 0, True)])
        with pytest.raises(ValueError, match="beyond its context"):
            scheduler.decoder.decode([(0, [1] * 10, 45, True)])
    finally:
        scheduler.close()
    with pytest.raises(RuntimeError, match="shut down"):
        next(scheduler.stream(prompts[0], 4))
