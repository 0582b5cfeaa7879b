"""The ONNX Runtime backend on a tiny Llama exported with ``distillm-edge export --format onnx``.

Checks the shared backend contract: same tokenizer and chat template as the source, full-sequence
log-probs equal to PyTorch's, ``token_logprobs`` consistent with them, and a KV-cache ``stream``
that equals recomputing the whole sequence at every step (and PyTorch's greedy output), plus
the error for a directory that is not an export.

Run: ``pytest tests/backends/test_onnx_backend.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from distillm_edge.errors import UserError

CHAT = [{"role": "user", "content": "A 72-year-old has a potassium of 6.1 mmol/L on lisinopril. Next step?"}]


@pytest.fixture(scope="module")
def backends(tiny_onnx_dir, tiny_llama_dir):
    from distillm_edge.backends import open_backend

    onnx = open_backend(str(tiny_onnx_dir), threads=2)  # "auto" picks onnx for an export directory
    torch_backend = open_backend(str(tiny_llama_dir), backend="torch")
    yield onnx, torch_backend
    onnx.close()


def test_opens_as_onnx_with_the_source_tokenizer(backends, tiny_llama_dir):
    onnx, torch_backend = backends
    assert onnx.info.backend == "onnx" and onnx.info.dtype == "fp32" and onnx.info.threads == 2
    assert onnx.vocab_size == torch_backend.vocab_size and onnx.eos_token_ids == torch_backend.eos_token_ids
    assert onnx.chat_ids(CHAT) == torch_backend.chat_ids(CHAT)
    text = "HbA1c 7.2% ½ 心肌梗死 💊 def f(x): return x"
    assert onnx.tokenize(text) == torch_backend.tokenize(text)
    assert onnx.detokenize(onnx.tokenize(text)) == text


def test_logprobs_match_torch(backends):
    onnx, torch_backend = backends
    ids = onnx.chat_ids(CHAT)
    rows = onnx.next_token_logprobs(ids)
    assert rows.shape == (len(ids), onnx.vocab_size) and rows.dtype == np.float32
    np.testing.assert_allclose(np.exp(rows).sum(-1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(rows, torch_backend.next_token_logprobs(ids), atol=2e-4)
    picked = onnx.token_logprobs(ids, start=3)
    np.testing.assert_array_equal(picked, rows[np.arange(2, len(ids) - 1), ids[3:]])


def test_stream_with_cache_equals_full_recompute_and_torch(backends):
    onnx, torch_backend = backends
    ids = onnx.chat_ids(CHAT)
    streamed = list(onnx.stream(ids, 10))
    seq, recomputed = list(ids), []
    for _ in range(len(streamed)):
        token = int(onnx.next_token_logprobs(seq)[-1].argmax())
        recomputed.append(token)
        seq.append(token)
    assert streamed == recomputed
    assert streamed == list(torch_backend.stream(ids, 10))
    sampled = list(onnx.stream(ids, 5, temperature=1.0, seed=1))
    assert sampled == list(onnx.stream(ids, 5, temperature=1.0, seed=1)) and len(sampled) <= 5


def test_runs_unchanged_on_onnxruntime_genai(backends, tiny_onnx_dir):
    import onnxruntime_genai as og

    onnx, _ = backends
    ids = onnx.chat_ids(CHAT)
    model = og.Model(str(tiny_onnx_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + 6)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    assert tokens == list(onnx.stream(ids, len(tokens)))[: len(tokens)]


def test_not_an_export_is_a_clear_error(tmp_path):
    from distillm_edge.backends.onnx_backend import OnnxBackend

    with pytest.raises(UserError, match="not an ONNX export directory"):
        OnnxBackend(str(tmp_path))
