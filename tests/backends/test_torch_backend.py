"""TorchBackend's batched scoring (last_logprobs, continuation_logprobs) against the reference loops.

Unit tests use the 2-layer random Llama (``tiny_llama_dir``) and a tiny random Gemma-3 with a
4-token sliding window (so prefix caches cross the window); the slow test runs the embedded SmolLM2.

Run: ``pytest tests/backends/test_torch_backend.py`` (``-m "not slow"`` for the unit tests only).
"""

from __future__ import annotations

import numpy as np
import pytest

from distillm_edge.backends.base import (
    continuation_logprobs,
    last_logprobs,
    reference_continuation_logprobs,
    reference_last_logprobs,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and a busy shared CPU makes OpenMP barriers costly."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    from distillm_edge.backends.torch_backend import TorchBackend

    return TorchBackend(str(tiny_llama_dir))


@pytest.fixture(scope="module")
def tiny_gemma(smollm2_tokenizer):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from distillm_edge.backends.torch_backend import TorchBackend

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(smollm2_tokenizer), hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                           sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                           max_position_embeddings=256)
    model = Gemma3ForCausalLM(cfg).eval()
    return TorchBackend("tiny-gemma", model=model, tokenizer=smollm2_tokenizer)


def _seqs(rng, n, lo, hi, vocab=2000):
    return [list(rng.integers(3, vocab, size=int(rng.integers(lo, hi)))) for _ in range(n)]


@pytest.mark.parametrize("backend_name", ["tiny", "tiny_gemma"])
@pytest.mark.parametrize("prefix_len", [0, 9])
def test_last_logprobs_matches_reference(request, backend_name, prefix_len):
    backend = request.getfixturevalue(backend_name)
    rng = np.random.default_rng(prefix_len)
    prefix = _seqs(rng, 1, prefix_len, prefix_len + 1)[0] if prefix_len else []
    contexts = _seqs(rng, 7, 1, 15)
    fast = backend.last_logprobs(contexts, prefix, batch_tokens=40)  # several batches, ragged lengths
    ref = reference_last_logprobs(backend, contexts, prefix)
    assert fast.shape == (7, backend.vocab_size)
    np.testing.assert_allclose(fast, ref, atol=2e-5)
    np.testing.assert_allclose(last_logprobs(backend, contexts, prefix), ref, atol=2e-5)


@pytest.mark.parametrize("backend_name", ["tiny", "tiny_gemma"])
@pytest.mark.parametrize("prefix_len", [0, 6])
def test_continuation_logprobs_matches_reference(request, backend_name, prefix_len):
    backend = request.getfixturevalue(backend_name)
    rng = np.random.default_rng(10 + prefix_len)
    prefix = _seqs(rng, 1, prefix_len, prefix_len + 1)[0] if prefix_len else []
    pairs = list(zip(_seqs(rng, 5, 1 if not prefix else 0, 8), _seqs(rng, 5, 1, 6)))
    fast = continuation_logprobs(backend, pairs, prefix)
    ref = reference_continuation_logprobs(backend, pairs, prefix)
    for (lp, greedy), (rlp, rgreedy) in zip(fast, ref):
        np.testing.assert_allclose(lp, rlp, atol=2e-5)
        np.testing.assert_array_equal(greedy, rgreedy)


def test_small_logits_budget_still_matches(tiny):
    rng = np.random.default_rng(3)
    pairs = list(zip(_seqs(rng, 4, 2, 6), _seqs(rng, 4, 3, 9)))
    fast = tiny.continuation_logprobs(pairs, (), batch_tokens=1)  # one sequence per batch
    ref = reference_continuation_logprobs(tiny, pairs)
    for (lp, _), (rlp, _) in zip(fast, ref):
        np.testing.assert_allclose(lp, rlp, atol=2e-5)


def test_empty_inputs_are_rejected(tiny):
    with pytest.raises(ValueError):
        tiny.last_logprobs([[]])
    with pytest.raises(ValueError):
        tiny.continuation_logprobs([([1, 2], [])])


@pytest.mark.slow
def test_smollm2_batched_scoring_matches_reference():
    from distillm_edge.backends import open_backend

    backend = open_backend("smollm2-135m-instruct", backend="torch")
    prefix = backend.tokenize("The following are multiple choice questions (with answers) about anatomy.\n\n")
    contexts = [backend.tokenize(q) for q in ("Which bone is in the arm?\nAnswer:", "What pumps blood?\nAnswer:")]
    fast = backend.last_logprobs(contexts, prefix)
    np.testing.assert_allclose(fast, reference_last_logprobs(backend, contexts, prefix), atol=1e-4)
    assert np.allclose(np.exp(fast).sum(-1), 1.0, atol=1e-4)
