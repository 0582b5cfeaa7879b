"""The ONNX backend's shared past/present KV buffer (GroupQueryAttention writing the cache in place).

``OnnxBackend.stream`` preallocates one buffer per cache tensor and binds it as both the
``past_key_values.*`` input and the ``present.*`` output when the export supports it (genai_config's
``past_present_share_buffer`` and GQA reading every past input); otherwise it grows the cache by
concatenation. These tests check that the in-place path really is in place (the same buffers every
step), that its greedy tokens and per-step logits equal the concatenation path and a full recompute,
that scoring is untouched, and that exports without the support keep the concatenation path.

Run: ``pytest tests/backends/test_onnx_shared_cache.py`` (the SmolLM2 int4 check is ``-m slow``).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from distillm_edge.errors import UserError

CHAT = [{"role": "user", "content": "A 72-year-old has a potassium of 6.1 mmol/L on lisinopril. Next step?"}]


@pytest.fixture(scope="module")
def backend(tiny_onnx_dir):
    from distillm_edge.backends.onnx_backend import OnnxBackend

    backend = OnnxBackend(str(tiny_onnx_dir), threads=1)
    yield backend
    backend.close()


class _RecordingSession:
    """Wraps an InferenceSession; after each I/O-binding run records (data pointer, shape) of the
    first cache output (``present.0.key``: both paths bind logits first, then the cache in layer
    order), to see whether the cache is written in place."""

    def __init__(self, session):
        self._session, self.presents = session, []

    def __getattr__(self, attr):
        return getattr(self._session, attr)

    def run_with_iobinding(self, binding, *args):
        self._session.run_with_iobinding(binding, *args)
        key = next(o for o in binding.get_outputs() if len(o.shape()) == 4)
        self.presents.append((key.data_ptr(), tuple(key.shape())))


def _step_logits(backend, ids: list[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
    """Greedy tokens and the logits row behind each, from ``stream``'s own cache path."""
    rows, tokens = [], []
    if backend.share_buffer:
        gen = backend._shared_steps(ids, len(ids) + steps)
        row = next(gen)
        for _ in range(steps):
            rows.append(np.array(row))
            tokens.append(int(row.argmax()))
            if len(tokens) < steps:
                row = gen.send(tokens[-1])
    else:
        cache, step = backend._empty_cache(), list(ids)
        for _ in range(steps):
            logits, cache = backend._run(step, cache)
            rows.append(logits[-1].copy())
            tokens.append(int(logits[-1].argmax()))
            step = [tokens[-1]]
    return tokens, rows


def test_export_supports_shared_buffers_and_stream_writes_in_place(backend, monkeypatch):
    assert backend.share_buffer is True  # the builder's GQA graph + past_present_share_buffer in genai_config
    ids = backend.chat_ids(CHAT)
    recorder = _RecordingSession(backend.session)
    monkeypatch.setattr(backend, "session", recorder)
    tokens = list(backend.stream(ids, 6))
    ptrs = {ptr for ptr, _ in recorder.presents}
    shapes = {shape for _, shape in recorder.presents}
    assert len(recorder.presents) == len(tokens)  # prompt + one run per fed-back token
    # one buffer for the whole sequence, sized prompt + max_new_tokens (< prompt + 64), never reallocated
    assert len(ptrs) == 1 and shapes == {(1, backend.kv_heads, len(ids) + 6, backend.head_size)}


def test_capacity_doubles_with_the_same_tokens_and_logits(backend, monkeypatch):
    """A long answer outgrows the first capacity (prompt + 64): the buffers are replaced once by
    larger ones holding the same prefix, and decoding goes on exactly as with concatenation."""
    ids = backend.chat_ids(CHAT)
    recorder = _RecordingSession(backend.session)
    monkeypatch.setattr(backend, "session", recorder)
    shared_tokens, shared_rows = _step_logits(backend, ids, 100)
    assert [shape[2] for _, shape in recorder.presents] == [len(ids) + 64] * 65 + [len(ids) + 100] * 35
    assert len({ptr for ptr, _ in recorder.presents}) == 2
    monkeypatch.setattr(backend, "share_buffer", False)
    concat_tokens, concat_rows = _step_logits(backend, ids, 100)
    assert shared_tokens == concat_tokens
    np.testing.assert_allclose(np.stack(shared_rows), np.stack(concat_rows), atol=1e-5)


def test_concatenation_path_reallocates(backend, monkeypatch):
    """The reference path (and today's code before the shared buffer): a new, longer cache each step."""
    monkeypatch.setattr(backend, "share_buffer", False)
    recorder = _RecordingSession(backend.session)
    monkeypatch.setattr(backend, "session", recorder)
    ids = backend.chat_ids(CHAT)
    list(backend.stream(ids, 4))
    lengths = [shape[2] for _, shape in recorder.presents]
    assert lengths == list(range(len(ids), len(ids) + len(lengths)))


def test_shared_equals_concatenation_and_full_recompute(backend, monkeypatch):
    ids = backend.chat_ids(CHAT)
    shared_tokens, shared_rows = _step_logits(backend, ids, 8)
    monkeypatch.setattr(backend, "share_buffer", False)
    concat_tokens, concat_rows = _step_logits(backend, ids, 8)
    assert shared_tokens == concat_tokens
    np.testing.assert_allclose(np.stack(shared_rows), np.stack(concat_rows), atol=1e-5)
    full = backend.next_token_logprobs(ids + shared_tokens[:-1])  # naive: the whole sequence, no cache
    from distillm_edge.backends.base import log_softmax

    np.testing.assert_allclose(log_softmax(np.stack(shared_rows)), full[len(ids) - 1:], atol=2e-4)
    monkeypatch.setattr(backend, "share_buffer", True)
    streamed = list(backend.stream(ids, 8))
    assert streamed == shared_tokens[: len(streamed)]
    sampled = list(backend.stream(ids, 6, temperature=1.0, seed=3))
    monkeypatch.setattr(backend, "share_buffer", False)
    assert sampled == list(backend.stream(ids, 6, temperature=1.0, seed=3))


def test_context_length_still_bounds_the_shared_path(backend, monkeypatch):
    ids = backend.chat_ids(CHAT)
    monkeypatch.setattr(backend, "context_length", len(ids) + 2)
    tokens = []
    with pytest.raises(UserError, match="exceeds the export's context length"):
        for token in backend.stream(ids, 10):
            tokens.append(token)
            if token in backend.eos_token_ids:
                pytest.skip("the tiny model stopped before the limit")
    assert len(tokens) == 3  # positions len(ids) .. len(ids)+2 fit; the fourth would not


def _copy_export(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_config_without_share_buffer_keeps_concatenation(tiny_onnx_dir, backend, tmp_path):
    from distillm_edge.backends.onnx_backend import OnnxBackend

    folder = _copy_export(tiny_onnx_dir, tmp_path / "no_share")
    config_file = folder / "genai_config.json"
    config = json.loads(config_file.read_text())
    config["search"]["past_present_share_buffer"] = False
    config_file.write_text(json.dumps(config))
    plain = OnnxBackend(str(folder), threads=1)
    try:
        assert plain.share_buffer is False
        ids = plain.chat_ids(CHAT)
        assert list(plain.stream(ids, 6)) == list(backend.stream(ids, 6))
    finally:
        plain.close()
    with pytest.raises(UserError, match="cannot share past/present KV buffers"):
        OnnxBackend(str(folder), threads=1, share_buffer=True)


def test_graph_without_gqa_cache_inputs_keeps_concatenation(tiny_onnx_dir, backend, tmp_path):
    """A graph whose past inputs reach attention through another node (here an Identity) cannot be
    updated in place; the backend must detect that from the graph and fall back, still correct."""
    import onnx

    from distillm_edge.backends.onnx_backend import OnnxBackend

    folder = _copy_export(tiny_onnx_dir, tmp_path / "no_gqa_past")
    model = onnx.load(str(folder / "model.onnx"))
    for node in list(model.graph.node):
        if node.op_type == "GroupQueryAttention":
            for slot in (3, 4):
                past = node.input[slot]
                node.input[slot] = f"{past}/identity"
                model.graph.node.append(onnx.helper.make_node("Identity", [past], [f"{past}/identity"]))
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    plain = OnnxBackend(str(folder), threads=1)
    try:
        assert plain.share_buffer is False
        ids = plain.chat_ids(CHAT)
        assert list(plain.stream(ids, 6)) == list(backend.stream(ids, 6))
        np.testing.assert_array_equal(plain.next_token_logprobs(ids), backend.next_token_logprobs(ids))
    finally:
        plain.close()


@pytest.mark.slow
def test_smollm2_int4_shared_equals_concatenation(tmp_path, smollm2_dir):
    from distillm_edge.backends.onnx_backend import OnnxBackend
    from distillm_edge.export.onnx_convert import build_onnx

    build_onnx(smollm2_dir, tmp_path, "int4", 30)
    backend = OnnxBackend(str(tmp_path), threads=2)
    try:
        assert backend.share_buffer is True and backend.info.dtype == "int4"
        ids = backend.chat_ids([{"role": "user", "content": "What is the normal range of blood pressure?"}])
        shared_tokens, shared_rows = _step_logits(backend, ids, 16)
        backend.share_buffer = False
        concat_tokens, concat_rows = _step_logits(backend, ids, 16)
        assert shared_tokens == concat_tokens
        np.testing.assert_allclose(np.stack(shared_rows), np.stack(concat_rows), atol=1e-4)
        backend.share_buffer = True
        streamed = list(backend.stream(ids, 16))
        assert streamed == shared_tokens[: len(streamed)]
    finally:
        backend.close()
