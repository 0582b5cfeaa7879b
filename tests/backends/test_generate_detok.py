"""Incremental detokenization in ``backends/generate.stream_text``: the streamed text equals the
one-shot decode on real tokenizers (byte-level BPE, SentencePiece with byte fallback, llama.cpp's
own detokenizer), and each token costs a bounded decode, not a re-decode of the whole answer.

Run: ``pytest tests/backends/test_generate_detok.py`` (the llama.cpp case is slow: it loads the
embedded Gemma GGUF).
"""

from __future__ import annotations

import numpy as np
import pytest

from distillm_edge.backends.generate import GenerationSettings, Result, stream_text

TEXTS = [
    "Take 500 mg amoxicillin three times a day.",
    "  leading spaces, then words; trailing space ",
    "Fièvre à 39 °C chez l'enfant — naïve façon, œdème, Größe, São Paulo.",
    "心肌梗死的症状包括胸痛。血圧 140/90 mmHg。열이 나요.",
    "Emoji: 🤒🌡️💊 👩🏽‍⚕️ and a flag 🇫🇷; math ∑ x² ≤ ∞; ZWJ 👨‍👩‍👧.",
    "Line one\n\n- item *one*\n- item `two`\n\n```python\nprint('x')\n```\n",
    " a . b , c ! don't won't it's ( x ) [ y ]",
]


class CountingBackend:
    """Wraps a decode function: ``stream`` replays ``script``; counts the ids ``detokenize`` sees."""

    def __init__(self, decode, script, eos=frozenset()):
        self._decode, self.script, self.eos_token_ids = decode, script, eos
        self.decoded_ids = 0
        self.calls = 0

    def detokenize(self, ids):
        self.calls += 1
        self.decoded_ids += len(ids)
        return self._decode(list(ids))

    def stream(self, ids, max_new_tokens, temperature=0.0, seed=0, top_p=1.0):
        yield from self.script[:max_new_tokens]


def streamed(decode, ids) -> tuple[str, list[str], CountingBackend]:
    backend = CountingBackend(decode, ids)
    result = Result()
    deltas = [d.text for d in stream_text(backend, [1], GenerationSettings(max_new_tokens=len(ids) + 1), result=result)]
    assert "".join(deltas) == result.text
    return result.text, deltas, backend


def check_tokenizer(decode, encode, vocab_size: int) -> None:
    for text in TEXTS:
        ids = encode(text)
        full, deltas, _ = streamed(decode, ids)
        assert full == decode(ids), text
        if "\ufffd" not in full:
            assert all("\ufffd" not in d for d in deltas), text  # no broken character was ever shown
    # Arbitrary ids (what a sampled model may emit: byte pieces that never complete a character).
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids = [int(i) for i in rng.integers(0, vocab_size, size=int(rng.integers(1, 40)))]
        assert streamed(decode, ids)[0] == decode(ids)


def test_each_token_decodes_a_bounded_window_not_the_whole_answer():
    """Re-decoding all ids per token is O(n^2): 400 tokens would pass ~80,000 ids to the decoder."""
    text = ("Drink water and rest; see a doctor if the fever lasts more than three days. " * 6)[:400]
    ids = list(text.encode())
    full, _, backend = streamed(lambda ids: bytes(ids).decode("utf-8", errors="replace"), ids)
    assert full == text
    assert backend.decoded_ids <= 8 * len(ids), backend.decoded_ids  # linear in the answer
    assert backend.calls <= 3 * len(ids) + 2


def test_stop_strings_still_cut_and_never_leak_with_incremental_decoding():
    text = "Rest and fluids.\nUser: and then?"
    ids = list(text.encode())
    backend = CountingBackend(lambda ids: bytes(ids).decode("utf-8", errors="replace"), ids)
    result = Result()
    deltas = [d.text for d in stream_text(backend, [1], GenerationSettings(stop=("\nUser:", "XYZ")), result=result)]
    assert "".join(deltas) == result.text == "Rest and fluids." and result.finish_reason == "stop"


def test_byte_level_bpe_smollm2(smollm2_tokenizer):
    tok = smollm2_tokenizer
    check_tokenizer(lambda ids: tok.decode(ids, skip_special_tokens=True),
                    lambda text: tok.encode(text, add_special_tokens=False), len(tok))


def test_sentencepiece_gemma_leading_spaces_and_byte_fallback(gemma_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma_dir)
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    encode = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    check_tokenizer(decode, encode, len(tok))
    ids = encode(" hello world")  # a leading "▁" piece at the window's start must not lose its space
    assert streamed(decode, ids)[0] == decode(ids)


@pytest.mark.slow
def test_llama_cpp_detokenizer_gemma_gguf():
    from distillm_edge.backends.llamacpp_backend import LlamaCppBackend

    backend = LlamaCppBackend("gemma-3-270m", threads=1, n_ctx=256)
    try:
        check_tokenizer(backend.detokenize, lambda text: backend.tokenize(text, add_special_tokens=False),
                        backend.vocab_size)
    finally:
        backend.close()
