"""LlamaCppBackend on the embedded SmolLM2 GGUF: tokenizer and chat template agree with transformers,
scoring fast paths agree with the reference loops (also after the KV cache holds another sequence),
greedy streaming follows the argmax, and GGUF log-probs track the dequantized HF checkpoint.

Run: ``pytest tests/backends/test_llamacpp_backend.py`` (slow-marked: loads the real GGUF, ~1 s).
"""

from __future__ import annotations

import numpy as np
import pytest

from distillm_edge.backends.base import reference_continuation_logprobs, reference_last_logprobs

pytestmark = pytest.mark.slow

TEXT = "Hypertension is a major risk factor for stroke. First-line treatment includes"


@pytest.fixture(scope="module")
def gguf():
    from distillm_edge.backends import open_backend

    backend = open_backend("smollm2-135m-instruct", backend="gguf", threads=1, n_ctx=1024)
    yield backend
    backend.close()


def test_info_and_tokenizer_match_transformers(gguf, smollm2_tokenizer):
    assert gguf.info.backend == "gguf" and gguf.info.dtype == "Q4_1" and gguf.info.path.endswith(".gguf")
    assert gguf.vocab_size == 49152 and smollm2_tokenizer.eos_token_id in gguf.eos_token_ids
    assert gguf.tokenize(TEXT) == smollm2_tokenizer(TEXT).input_ids
    assert gguf.detokenize(gguf.tokenize(TEXT)) == TEXT
    messages = [{"role": "user", "content": "What is a stroke?"}]
    expected = smollm2_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert gguf.chat_ids(messages) == smollm2_tokenizer(expected, add_special_tokens=False).input_ids


def test_scoring_fast_paths_match_reference_and_reuse_cache(gguf):
    ids = gguf.tokenize(TEXT)
    rows = gguf.next_token_logprobs(ids)
    assert rows.shape == (len(ids), gguf.vocab_size)
    np.testing.assert_allclose(np.exp(rows).sum(-1), 1.0, atol=1e-4)
    np.testing.assert_allclose(gguf.token_logprobs(ids, 3), rows[np.arange(2, len(ids) - 1), ids[3:]], atol=1e-5)
    prefix, contexts = ids[:5], [ids[5:9], ids[5:], ids[7:10]]
    fast = gguf.last_logprobs(contexts, prefix)  # the cache now ends with prefix + contexts[-1]
    np.testing.assert_allclose(fast, reference_last_logprobs(gguf, contexts, prefix), atol=1e-4)
    pairs = [(ids[:4], ids[4:8]), (ids[:6], ids[6:])]
    for (lp, hit), (rlp, rhit) in zip(gguf.continuation_logprobs(pairs, ids[:2]),
                                      reference_continuation_logprobs(gguf, pairs, ids[:2])):
        np.testing.assert_allclose(lp, rlp, atol=1e-4)
        np.testing.assert_array_equal(hit, rhit)


def test_greedy_stream_follows_argmax_and_counts_perf(gguf):
    prompt = gguf.chat_ids([{"role": "user", "content": "Name one symptom of anemia."}])
    gguf.reset_perf()
    out = list(gguf.stream(prompt, 6))
    seq = list(prompt)
    for token in out:
        assert token == int(np.argmax(gguf.next_token_logprobs(seq)[-1]))
        seq.append(token)
    assert 1 <= len(out) <= 6


def test_perf_counters_count_decoded_tokens(gguf):
    gguf.reset_perf()
    gguf.next_token_logprobs(gguf.tokenize("A different sentence about the kidney."))
    perf = gguf.perf()
    assert perf["prompt_tokens"] > 0 and perf["prompt_eval_ms"] > 0


def test_gguf_tracks_dequantized_checkpoint(gguf):
    from distillm_edge.backends import open_backend

    torch_backend = open_backend("smollm2-135m-instruct", backend="torch")
    ids = gguf.tokenize(TEXT)
    a, b = gguf.next_token_logprobs(ids), torch_backend.next_token_logprobs(ids)
    top1 = np.mean(a.argmax(-1) == b.argmax(-1))
    target = gguf.token_logprobs(ids), torch_backend.token_logprobs(ids)
    assert top1 >= 0.8, top1  # same weights; llama.cpp runs them Q4_1 x Q8 while torch dequantizes to fp32
    assert np.abs(target[0] - target[1]).mean() < 0.3
