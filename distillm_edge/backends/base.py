"""The one inference interface shared by eval, export's parity check, bench, chat and serve.

A backend wraps one loaded model on one runtime (PyTorch/transformers, llama.cpp through
llama-cpp-python, ONNX Runtime) and offers the same small set of operations:

- ``tokenize`` / ``detokenize`` / ``chat_text`` / ``chat_ids`` (the model's own tokenizer and chat
  template: ``chat_text`` is the rendered template, special tokens as text, and ``chat_ids`` is
  exactly ``tokenize(chat_text(...), add_special_tokens=False)``; ``is_special_token(id)`` says
  whether ``tokenize`` cuts the text at that token's literal before BPE runs, so a caller may
  tokenize a rendered conversation in pieces cut there, as ``prompt.ChatPromptCache`` does);
- ``next_token_logprobs(ids)``: float32 log-softmax rows, row *t* is the distribution of the
  token after ``ids[:t+1]`` — used for log-likelihood scoring, KL and top-1 parity;
- ``token_logprobs(ids, start)``: log p(ids[t] | ids[:t]) for t >= start (perplexity, MCQ scoring);
- ``stream(ids, max_new_tokens)``: yields generated token ids one at a time (greedy by default),
  so callers time first-token latency and per-token latency from outside;
- ``info``: what was loaded (backend, file, threads, dtype/quant, load seconds).

Optional fast paths for evaluation, reached through :func:`last_logprobs` and
:func:`continuation_logprobs` (which fall back to reference loops over ``next_token_logprobs``):
``backend.last_logprobs(contexts, prefix)`` and ``backend.continuation_logprobs(pairs, prefix)``
score many sequences that share ``prefix`` in batches, computing the prefix once.

Test: ``pytest tests/backends``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class BackendInfo:
    backend: str  # "torch" | "gguf" | "onnx"
    model: str  # the spec it was opened from
    path: str = ""  # file or directory actually loaded
    dtype: str = ""  # fp32/bf16/q8_0/int4/...
    threads: int = 0
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    info: BackendInfo
    vocab_size: int
    eos_token_ids: frozenset[int]

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def detokenize(self, ids: Sequence[int]) -> str: ...

    def chat_text(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str: ...

    def chat_ids(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]: ...

    def is_special_token(self, token: int) -> bool: ...

    def next_token_logprobs(self, ids: Sequence[int]) -> np.ndarray: ...

    def token_logprobs(self, ids: Sequence[int], start: int = 1) -> np.ndarray: ...

    def stream(
        self, ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0, seed: int = 0, top_p: float = 1.0
    ) -> Iterator[int]: ...

    def close(self) -> None: ...


def hf_chat_text(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """``messages`` rendered by a Hugging Face tokenizer's chat template (special tokens as text)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def hf_is_special_token(tokenizer, token: int) -> bool:
    """Whether a Hugging Face tokenizer cuts ``token`` out of the raw text before anything else runs,
    whatever text follows: an added token (``<|im_start|>``, ``<start_of_turn>``, ...) matched on the
    text as written (not normalized) and not only as a whole word."""
    added = tokenizer.added_tokens_decoder.get(int(token))
    return added is not None and not added.normalized and not added.single_word


def hf_chat_ids(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of ``messages`` through a Hugging Face tokenizer's chat template: the template adds
    its own special tokens, so the rendered text is tokenized without the tokenizer's (no double BOS)."""
    text = hf_chat_text(tokenizer, messages, add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens ``a`` and ``b`` share (KV-cache reuse, parity continuations)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable float32 log-softmax over the last axis."""
    x = logits.astype(np.float32, copy=False)
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def gather_token_logprobs(rows: np.ndarray, ids: Sequence[int], start: int) -> np.ndarray:
    """From next-token log-prob rows of ``ids``, pick log p(ids[t] | ids[:t]) for t >= start."""
    if start < 1:
        raise ValueError("start must be >= 1: the first token has no prefix to be scored against")
    targets = np.asarray(ids[start:], dtype=np.int64)
    return rows[np.arange(start - 1, len(ids) - 1), targets]


def sample(logprobs_row: np.ndarray, temperature: float, rng: np.random.Generator, top_p: float = 1.0) -> int:
    """Greedy when temperature is 0, else a sample from softmax(logits / temperature), restricted
    to the nucleus when ``top_p < 1``: the most probable tokens whose cumulative probability first
    reaches ``top_p`` (at least one token), renormalized."""
    if temperature <= 0:
        return int(np.argmax(logprobs_row))
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    p = np.exp(log_softmax(logprobs_row / temperature).astype(np.float64))
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]  # mass strictly above each token in the ranking
        keep = order[before < top_p]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q
    return int(rng.choice(p.shape[-1], p=p / p.sum()))


# --- Batched scoring (eval) -------------------------------------------------------------------
# Backends may implement ``last_logprobs`` and ``continuation_logprobs`` as fast paths (batching,
# shared-prefix KV reuse, logits only where needed). The functions below call the fast path when a
# backend has one and otherwise fall back to the plain reference built on ``next_token_logprobs``;
# tests compare the two.


def reference_last_logprobs(backend: Backend, contexts: Sequence[Sequence[int]],
                            prefix: Sequence[int] = ()) -> np.ndarray:
    """[len(contexts), V]: log p(next token | prefix + context), one full forward pass each."""
    rows = []
    for ctx in contexts:
        ids = [*prefix, *ctx]
        if not ids:
            raise ValueError("cannot score the next token of an empty sequence")
        rows.append(backend.next_token_logprobs(ids)[-1])
    return np.stack(rows).astype(np.float32, copy=False)


def reference_continuation_logprobs(
    backend: Backend, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], prefix: Sequence[int] = ()
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per (context, continuation): (log p of each continuation token, whether it was the argmax)."""
    out = []
    for ctx, cont in pairs:
        ids = [*prefix, *ctx, *cont]
        start = len(prefix) + len(ctx)
        if start < 1 or not cont:
            raise ValueError("continuation scoring needs a non-empty context and continuation")
        rows = backend.next_token_logprobs(ids)[start - 1 : len(ids) - 1]
        targets = np.asarray(cont, dtype=np.int64)
        out.append((rows[np.arange(len(cont)), targets].astype(np.float32), rows.argmax(axis=-1) == targets))
    return out


def last_logprobs(backend: Backend, contexts: Sequence[Sequence[int]], prefix: Sequence[int] = ()) -> np.ndarray:
    """Next-token log-probs after ``prefix + context`` for each context, batched when the backend can."""
    fast = getattr(backend, "last_logprobs", None)
    return fast(contexts, prefix) if fast is not None else reference_last_logprobs(backend, contexts, prefix)


def continuation_logprobs(
    backend: Backend, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], prefix: Sequence[int] = ()
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Log-probs (and greedy flags) of each continuation given ``prefix + context``, batched when possible."""
    fast = getattr(backend, "continuation_logprobs", None)
    if fast is not None:
        return fast(pairs, prefix)
    return reference_continuation_logprobs(backend, pairs, prefix)
