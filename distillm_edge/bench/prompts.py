"""Benchmark prompts of exactly N tokens, cut from a shipped medical text with each model's tokenizer.

Every backend gets the same text: ``medical_text.json`` (original clinical teaching paragraphs
shipped with the package). The text is tokenized once without special tokens; prompt *k* of
length *N* is the tokenizer's own prefix (BOS, if it adds one) followed by the next ``N - len(BOS)``
tokens read cyclically from offset ``k * stride``. Different *k* give different prompts, so a
backend's prefix cache (llama.cpp reuses a matching KV prefix) cannot skip the prefill of a
repetition, and a batch of 8 gets 8 distinct rows of the same length.

Prompts are raw text continuation, not a chat turn: a model continuing a clinical paragraph rarely
emits EOS within a few hundred tokens, which keeps generations at the requested length.

Test: ``pytest tests/bench/test_bench_prompts.py``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

TEXT_FILE = Path(__file__).with_name("medical_text.json")
STRIDE = 97  # tokens between consecutive prompts' starting points (prime: offsets never line up with N)


@functools.lru_cache(maxsize=1)
def medical_text() -> str:
    return "\n\n".join(json.loads(TEXT_FILE.read_text(encoding="utf-8"))["paragraphs"])


def cyclic_slice(ids: list[int], start: int, n: int) -> list[int]:
    """``n`` items of ``ids`` from ``start``, wrapping around to the beginning as often as needed."""
    if not ids:
        raise ValueError("cannot cut a prompt from an empty token list")
    return [ids[(start + i) % len(ids)] for i in range(n)]


class PromptBuilder:
    """Builds prompts of exact token lengths for one tokenizer (``tokenize(text, add_special_tokens)``)."""

    def __init__(self, tokenize: Callable[..., list[int]], text: str | None = None):
        self.prefix = list(tokenize("", add_special_tokens=True))
        self.body = list(tokenize(text if text is not None else medical_text(), add_special_tokens=False))

    def prompt(self, n: int, k: int = 0) -> list[int]:
        """Prompt number ``k`` of exactly ``n`` tokens."""
        if n <= len(self.prefix):
            raise ValueError(f"a prompt of {n} tokens leaves no room after the {len(self.prefix)} special prefix tokens")
        return self.prefix + cyclic_slice(self.body, k * STRIDE, n - len(self.prefix))
