"""Batched ONNX decoding (``backends/onnx_batch.py``) against one-sequence ``OnnxBackend`` decoding.

Several prompts of different lengths share one batch of KV buffers; every row's greedy tokens and
per-step logits must equal decoding that prompt alone, also after a finished row is replaced by
the last one (rows kept packed). The scheduler serves concurrent streams (more than its slots),
frees a row when a consumer stops reading, and is what ``serve``'s engine uses for ONNX.

Run: ``pytest tests/backends/test_onnx_batch.py`` (the SmolLM2 int4 check is ``-m slow``).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from distillm_edge.errors import UserError

QUESTIONS = ["What is a normal INR?", "Define tachycardia in adults, briefly, with the usual threshold.", "Hi",
             "Which electrolyte disturbance peaks the T waves?"]


@pytest.fixture(scope="module")
def backend(tiny_onnx_dir):
    from distillm_edge.backends.onnx_backend import OnnxBackend

    backend = OnnxBackend(str(tiny_onnx_dir), threads=1)
    yield backend
    backend.close()


def _prompts(backend):
    return [backend.chat_ids([{"role": "user", "content": q}]) for q in QUESTIONS]


def _alone(backend, ids, steps):
    """Greedy tokens and per-step logits of one sequence through ``stream``'s shared-buffer path."""
    gen = backend._shared_steps(ids, len(ids) + steps)
    rows = [np.array(next(gen))]
    for _ in range(steps - 1):
        rows.append(np.array(gen.send(int(rows[-1].argmax()))))
    return [int(r.argmax()) for r in rows], rows


def _check_batch(backend, prompts, steps, atol):
    """Prefill every prompt into its row, decode them together; finish row 0 after half the steps
    (the last row moves into it) and go on. Compare with each prompt decoded alone."""
    from distillm_edge.backends.onnx_batch import BatchDecoder

    decoder = BatchDecoder(backend, len(prompts), 256)
    order = list(range(len(prompts)))  # order[row] = prompt index
    rows = {i: [decoder.prefill(i, p)] for i, p in enumerate(prompts)}
    for step in range(1, steps):
        if step == steps // 2:
            decoder.move(len(order) - 1, 0)
            order[0] = order.pop()
        out = decoder.decode([int(rows[i][-1].argmax()) for i in order])
        for row, i in enumerate(order):
            rows[i].append(out[row])
    for i, p in enumerate(prompts):
        n = len(rows[i])
        tokens, reference = _alone(backend, p, n)
        assert [int(r.argmax()) for r in rows[i]] == tokens, f"prompt {i}"
        np.testing.assert_allclose(np.stack(rows[i]), np.stack(reference), atol=atol, err_msg=f"prompt {i}")
    assert decoder.lengths[: len(order)] == [len(prompts[i]) + steps - 1 for i in order]


def test_batched_decode_equals_each_sequence_alone(backend):
    _check_batch(backend, _prompts(backend), 10, atol=1e-5)


def test_batch_generate_equals_stream(backend):
    from distillm_edge.backends.onnx_batch import BatchDecoder, batch_generate

    prompts = _prompts(backend)[:3]
    result = batch_generate(BatchDecoder(backend, 4, 128), prompts, 6)
    for prompt, tokens in zip(prompts, result["tokens"], strict=True):
        assert tokens == _alone(backend, prompt, 6)[0]
    assert result["decode_tps"] > 0 and result["prefill_s"] > 0


def _collect(scheduler, ids, n, results, key, **options):
    results[key] = list(scheduler.stream(ids, n, **options))


def test_scheduler_serves_more_streams_than_slots(backend):
    from distillm_edge.backends.onnx_batch import OnnxSlotScheduler

    prompts = _prompts(backend)
    scheduler = OnnxSlotScheduler(backend, n_slots=2, n_ctx_per_slot=256)
    try:
        results = {}
        threads = [threading.Thread(target=_collect, args=(scheduler, p, 6 + i, results, i)) for i, p in enumerate(prompts)]
        threads.append(threading.Thread(target=_collect, args=(scheduler, prompts[0], 6, results, "sampled"),
                                        kwargs={"temperature": 1.0, "seed": 4}))
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for i, p in enumerate(prompts):
            assert results[i] == list(backend.stream(p, 6 + i)), f"prompt {i}"
        assert results["sampled"] == list(backend.stream(prompts[0], 6, temperature=1.0, seed=4))
        assert scheduler.running == 0 and scheduler.waiting == 0 and scheduler.failure is None
    finally:
        scheduler.close()


def test_scheduler_frees_a_row_when_the_reader_stops(backend):
    from distillm_edge.backends.onnx_batch import OnnxSlotScheduler

    prompts = _prompts(backend)
    scheduler = OnnxSlotScheduler(backend, n_slots=1, n_ctx_per_slot=256)
    try:
        stream = scheduler.stream(prompts[1], 200)
        next(stream)
        stream.close()
        cancel = threading.Event()
        cancelled = scheduler.stream(prompts[2], 200, cancel=cancel)
        next(cancelled)
        cancel.set()
        assert len(list(cancelled)) < 199
        # the single row is free again: a new request runs, and gives the same tokens as alone
        assert list(scheduler.stream(prompts[3], 5)) == list(backend.stream(prompts[3], 5))
        deadline = time.monotonic() + 10
        while scheduler.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scheduler.running == 0
        with pytest.raises(ValueError, match="exceed the slot context"):
            next(scheduler.stream(prompts[0], 256))
    finally:
        scheduler.close()
    with pytest.raises(RuntimeError, match="shut down"):
        next(scheduler.stream(prompts[0], 2))


def test_export_without_shared_buffers_is_refused(backend, monkeypatch):
    from distillm_edge.backends.onnx_batch import BatchDecoder

    monkeypatch.setattr(backend, "share_buffer", False)
    with pytest.raises(UserError, match="needs an export whose KV cache"):
        BatchDecoder(backend, 2, 64)


def test_serve_engine_batches_onnx(backend, monkeypatch):
    from distillm_edge.serve.engine import Engine

    engine = Engine(backend, slots=2, queue=2, ctx_per_slot=128)
    try:
        assert engine.scheduler is not None and engine.mode == "ONNX Runtime batched decode"
        ids = _prompts(backend)[0]
        assert list(engine.view(threading.Event()).stream(ids, 5)) == list(backend.stream(ids, 5))
    finally:
        engine.close()
    monkeypatch.setattr(backend, "share_buffer", False)  # an export that cannot batch: threads, as before
    engine = Engine(backend, slots=2, queue=2, ctx_per_slot=128)
    assert engine.scheduler is None and engine.mode == "threads over one model"


@pytest.mark.slow
def test_smollm2_int4_batched_decode_equals_alone(tmp_path, smollm2_dir):
    from distillm_edge.backends.onnx_backend import OnnxBackend
    from distillm_edge.export.onnx_convert import build_onnx

    build_onnx(smollm2_dir, tmp_path, "int4", 30)
    backend = OnnxBackend(str(tmp_path), threads=2)
    try:
        _check_batch(backend, _prompts(backend), 12, atol=1e-4)
    finally:
        backend.close()
