"""Log-likelihood scoring of multiple-choice tasks on any backend, the way lm-eval-harness scores them.

For each item, context and continuation are encoded as the harness does (trailing spaces of the
context move into the continuation; the continuation's tokens are those of ``context +
continuation`` past the context's own tokens) and a choice's score is the summed log-probability
of its continuation tokens given the context. The prediction is the argmax (first on ties).

Fast path: when every choice is a single token (" A".." D", " yes"/" no"/" maybe" for the
tokenizers we ship) one forward pass over the context gives all choices' log-likelihoods, read
from the last row. Otherwise the item falls back to multi-token continuation scoring (one
sequence per choice); results record how many items took each path. In both paths the token
prefix shared by every prompt of a task (description + few-shot examples) is computed once and
reused through the backend's batched scoring (``backends.base.last_logprobs`` /
``continuation_logprobs``).

Test: ``pytest tests/eval/test_scoring.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distillm_edge.backends.base import Backend, continuation_logprobs, last_logprobs
from distillm_edge.eval.prompts import MCQTask, context, continuations

MIN_SHARED_PREFIX = 8  # tokens; shorter shared prefixes are not worth a separate cached pass


@dataclass(frozen=True)
class TaskScores:
    task: str
    loglik: np.ndarray  # [n_items, n_choices] summed log-likelihood of each choice
    gold: np.ndarray  # [n_items] int
    single_token: int  # items scored on the one-pass fast path
    multi_token: int  # items scored by multi-token continuation

    @property
    def pred(self) -> np.ndarray:
        return self.loglik.argmax(axis=1)


def encode_choices(backend: Backend, ctx: str, conts: list[str]) -> tuple[list[int], list[list[int]]]:
    """lm-eval's ``_encode_pair`` for each continuation: the context's tokens, and each
    continuation's tokens taken from ``tokenize(context + continuation)`` past the context's."""
    n_spaces = len(ctx) - len(ctx.rstrip())
    if n_spaces:
        conts, ctx = [ctx[-n_spaces:] + c for c in conts], ctx[:-n_spaces]
    ctx_ids = backend.tokenize(ctx)
    return ctx_ids, [backend.tokenize(ctx + c)[len(ctx_ids):] for c in conts]


def common_prefix(seqs: list[list[int]]) -> int:
    """Length of the longest token prefix shared by all ``seqs``."""
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return n


def score_task(backend: Backend, task: MCQTask) -> TaskScores:
    """Choice log-likelihoods for every item of ``task`` on ``backend``."""
    conts = continuations(task)
    ctx_ids, cont_ids = [], []
    for item in task.items:
        ids, choice_ids = encode_choices(backend, context(task, item), conts)
        ctx_ids.append(ids)
        cont_ids.append(choice_ids)
    n = len(task.items)
    loglik = np.zeros((n, len(conts)), dtype=np.float64)
    fast = [i for i in range(n) if all(len(c) == 1 for c in cont_ids[i])]
    slow = [i for i in range(n) if any(len(c) != 1 for c in cont_ids[i])]

    def split(indices: list[int]) -> tuple[list[int], list[list[int]]]:
        """Shared token prefix (kept if long enough) and the per-item remainders."""
        if len(indices) < 2:
            return [], [ctx_ids[i] for i in indices]
        k = common_prefix([ctx_ids[i] for i in indices])
        k = min(k, min(len(ctx_ids[i]) for i in indices) - 1)  # every remainder keeps >= 1 token
        if k < MIN_SHARED_PREFIX:
            return [], [ctx_ids[i] for i in indices]
        return ctx_ids[indices[0]][:k], [ctx_ids[i][k:] for i in indices]

    if fast:
        prefix, rest = split(fast)
        rows = last_logprobs(backend, rest, prefix)
        for r, i in enumerate(fast):
            loglik[i] = rows[r, [c[0] for c in cont_ids[i]]]
    if slow:
        prefix, rest = split(slow)
        pairs = [(rest[r], c) for r, i in enumerate(slow) for c in cont_ids[i]]
        scored = continuation_logprobs(backend, pairs, prefix)
        for r, i in enumerate(slow):
            for j in range(len(conts)):
                loglik[i, j] = float(np.sum(scored[r * len(conts) + j][0], dtype=np.float64))
    gold = np.array([item.answer for item in task.items], dtype=np.int64)
    return TaskScores(task.name, loglik, gold, len(fast), len(slow))
