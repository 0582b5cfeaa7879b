"""Text streaming (backends/generate.py) and nucleus sampling (base.sample).

A byte-level scripted backend pins down the text logic exactly (split UTF-8 characters, stop
strings, EOS, cancellation); the tiny random Llama checks the same invariants on a real tokenizer
and model through TorchBackend.

Run: ``pytest tests/backends/test_generate.py``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from distillm_edge.backends.base import sample
from distillm_edge.backends.generate import (
    GenerationSettings,
    Result,
    fit_messages,
    generate_text,
    stream_text,
)
from distillm_edge.errors import UserError

EOS = 256


class ByteBackend:
    """Token i < 256 is byte i; 256 is EOS. ``stream`` replays a fixed script of tokens."""

    eos_token_ids = frozenset({EOS})

    def __init__(self, script: list[int]):
        self.script = script
        self.closed_early = False

    def detokenize(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")

    def chat_ids(self, messages, add_generation_prompt=True):
        return [b for m in messages for b in m["content"].encode()] + [0]

    def stream(self, ids, max_new_tokens, temperature=0.0, seed=0, top_p=1.0):
        try:
            yield from self.script[:max_new_tokens]
        except GeneratorExit:
            self.closed_early = True
            raise


def script(text: str, eos: bool = True) -> list[int]:
    return list(text.encode()) + ([EOS] if eos else [])


def test_split_utf8_is_held_back_until_complete():
    backend = ByteBackend(script("fièvre 39°C"))
    result = Result()
    deltas = list(stream_text(backend, [1], GenerationSettings(temperature=0), result=result))
    assert all("\ufffd" not in d.text for d in deltas)
    assert "".join(d.text for d in deltas) == "fièvre 39°C" == result.text
    assert result.finish_reason == "stop"
    assert sum(len(d.token_ids) for d in deltas) == len("fièvre 39°C".encode())


def test_length_and_stop_string():
    r = generate_text(ByteBackend(script("abcdef", eos=False)), [1], GenerationSettings(max_new_tokens=4))
    assert (r.text, r.finish_reason, r.completion_tokens) == ("abcd", "length", 4)
    backend = ByteBackend(script("take aspirin\nUser: more"))
    deltas = list(stream_text(backend, [1], GenerationSettings(stop=("\nUser:",)), result=(r := Result())))
    assert r.text == "take aspirin" and r.finish_reason == "stop"
    assert "".join(d.text for d in deltas) == "take aspirin"  # the stop string's prefix never leaked
    assert backend.closed_early


def test_cancel_stops_between_tokens():
    cancel = threading.Event()
    backend = ByteBackend(script("a" * 50, eos=False))
    result = Result()
    seen = []
    for delta in stream_text(backend, [1], GenerationSettings(max_new_tokens=50), cancel, result):
        seen.append(delta.text)
        if len(seen) == 3:
            cancel.set()
    assert result.finish_reason == "cancelled" and result.text == "aaa" and backend.closed_early


def test_bad_settings_are_named():
    with pytest.raises(UserError, match="top_p"):
        GenerationSettings(top_p=0)
    with pytest.raises(UserError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0)


def test_fit_messages_drops_oldest_turns_and_keeps_system():
    backend = ByteBackend([])
    msgs = [{"role": "system", "content": "s" * 10}]
    for i in range(4):
        msgs += [{"role": "user", "content": f"q{i}" * 10}, {"role": "assistant", "content": f"a{i}" * 10}]
    msgs.append({"role": "user", "content": "last"})
    kept, dropped = fit_messages(backend, msgs, n_ctx=100, reserve=20)
    assert kept[0] == msgs[0] and kept[-1] == msgs[-1]
    assert dropped == len(msgs) - len(kept) and dropped % 2 == 0 and dropped > 0
    assert len(backend.chat_ids(kept)) + 20 <= 100
    assert fit_messages(backend, msgs, n_ctx=10_000, reserve=20) == (msgs, 0)
    with pytest.raises(UserError, match="context window"):
        fit_messages(backend, msgs, n_ctx=20, reserve=15)


def naive_top_p_support(p: np.ndarray, top_p: float) -> set[int]:
    """Sort descending; keep tokens until the kept mass reaches top_p (the first token always)."""
    order = sorted(range(len(p)), key=lambda i: -p[i])
    kept, mass = set(), 0.0
    for i in order:
        if mass >= top_p:
            break
        kept.add(i)
        mass += p[i]
    return kept


def test_top_p_samples_only_the_nucleus():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=12).astype(np.float32) * 2
    p = np.exp(logits - logits.max())
    p /= p.sum()
    logprobs = np.log(p)
    for top_p in (0.3, 0.6, 0.9):
        allowed = naive_top_p_support(p, top_p)
        draws = {sample(logprobs, 1.0, rng, top_p) for _ in range(400)}
        assert draws <= allowed and len(draws) == len(allowed)
    assert {sample(logprobs, 1.0, rng, 1.0) for _ in range(2000)} == set(range(12))
    assert sample(logprobs, 0.0, rng, 0.1) == int(np.argmax(p))


def test_real_tiny_model_deltas_match_tokens(tiny_llama_dir):
    from distillm_edge.backends.torch_backend import TorchBackend

    backend = TorchBackend(str(tiny_llama_dir))
    prompt = backend.chat_ids([{"role": "user", "content": "What lowers blood pressure?"}])
    settings = GenerationSettings(max_new_tokens=24, temperature=0.0)
    result = Result()
    deltas = list(stream_text(backend, prompt, settings, result=result))
    greedy = [t for t in backend.stream(prompt, 24) if t not in backend.eos_token_ids]
    assert result.token_ids == greedy
    assert "".join(d.text for d in deltas) == result.text == backend.detokenize(greedy)
    assert sum(len(d.token_ids) for d in deltas) == len(greedy)
    sampled = generate_text(backend, prompt, GenerationSettings(max_new_tokens=24, temperature=1.0, top_p=0.9, seed=3))
    again = generate_text(backend, prompt, GenerationSettings(max_new_tokens=24, temperature=1.0, top_p=0.9, seed=3))
    assert sampled.token_ids == again.token_ids  # seeded sampling is reproducible
