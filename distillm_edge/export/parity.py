"""Proof that an exported artifact still behaves like its source model.

The source (PyTorch, float32) and the artifact (llama.cpp or ONNX Runtime, through the shared
``Backend`` interface) see the same token ids — the fixed medical prompts shipped in
``parity_prompts.json``, each run through the source's chat template — and we measure:

- mean KL(source ‖ artifact) of the next-token distributions over every prompt position;
- top-1 agreement: the share of those positions where both predict the same token;
- greedy continuations of 64 tokens: per prompt, how many leading tokens are identical, and
  whether a continuation that differs parted from the source at a *tie of the source*: a step
  where the artifact's token is within ``TIE_NATS`` of the source's own top log-probability. A
  float16 rounding may legitimately flip such a coin toss (seen once on SmolLM2-135M f16: 99.85%
  top-1, one of 14 continuations parting after 15 tokens); past that point the continuations are
  no longer comparable, so the exact criterion accepts it and the figures count it apart;
- held-out perplexity on short medical reference texts, source vs artifact, and its increase;
- tokenizer agreement: the artifact's own tokenizer must produce the source's ids for every
  prompt (through its chat template) and reference text.

``reference`` runs the source once (reusable for several artifacts, as the benchmark does);
``compare`` runs an artifact against it; ``judge`` applies the criterion of the output type (see
``config.py``) and returns the failures (empty: verified).

Test: ``pytest tests/export/test_parity.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources

import numpy as np

from distillm_edge.backends.base import common_prefix

MAX_NEW_TOKENS = 64
MIN_TOP1 = {"exact": 0.99, "close": 0.97}
TIE_NATS = 0.05  # the source's log-prob gap under which two next tokens count as tied
TOP_K = 8  # source candidates kept per greedy step (ids and log-probs) for the tie rule


@dataclass(frozen=True)
class ParityInputs:
    prompts: tuple[str, ...]
    texts: tuple[str, ...]


def load_inputs() -> ParityInputs:
    data = json.loads(resources.files("distillm_edge.export").joinpath("parity_prompts.json").read_text("utf-8"))
    return ParityInputs(tuple(data["prompts"]), tuple(data["reference_texts"]))


# -- pure metrics ---------------------------------------------------------------------------------
def kl_rows(p_log: np.ndarray, q_log: np.ndarray) -> np.ndarray:
    """KL(p ‖ q) per row of two [T, V] log-probability arrays (float64 sums; exp(-inf) terms are 0)."""
    p_log = p_log.astype(np.float64)
    p = np.exp(p_log)
    with np.errstate(invalid="ignore"):  # 0 * -inf where the source gives a token no mass
        terms = np.where(p > 0, p * (p_log - q_log.astype(np.float64)), 0.0)
    return np.maximum(terms.sum(axis=-1), 0.0)


def top1_matches(p_log: np.ndarray, q_log: np.ndarray) -> np.ndarray:
    return p_log.argmax(axis=-1) == q_log.argmax(axis=-1)


def parted_at_tie(step_top: tuple[np.ndarray, np.ndarray] | None, token: int, tie_nats: float = TIE_NATS) -> bool:
    """True when ``token`` is among the source's top candidates ``(ids, logprobs)`` at that step,
    within ``tie_nats`` of the best one (so choosing it instead is a tie-break, not an error)."""
    if step_top is None:
        return False
    ids, lps = step_top
    hit = np.flatnonzero(ids == token)
    return bool(hit.size) and float(lps.max() - lps[hit[0]]) <= tie_nats


def top_candidates(rows: np.ndarray, k: int = TOP_K) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row of [T, V] log-probs, the ``k`` best ``(ids, logprobs)``."""
    k = min(k, rows.shape[-1])
    idx = np.argpartition(rows, -k, axis=-1)[:, -k:]
    return [(i.astype(np.int64), r[i].astype(np.float32)) for i, r in zip(idx, rows)]


def perplexity(token_logprobs: list[np.ndarray]) -> float:
    """exp of the mean negative log-likelihood over all scored tokens (nan when there are none)."""
    values = np.concatenate([np.asarray(v, dtype=np.float64) for v in token_logprobs]) if token_logprobs else np.array([])
    return float(math.exp(-values.mean())) if values.size else float("nan")


# -- source reference and comparison --------------------------------------------------------------
@dataclass
class Reference:
    prompt_ids: list[list[int]]
    rows: list[np.ndarray]
    greedy: list[list[int]]
    text_ids: list[list[int]]
    text_logprobs: list[np.ndarray]
    greedy_top: list[list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=list)  # per prompt, per step


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def reference(source, inputs: ParityInputs, max_new_tokens: int | None = None,
              progress: Callable[[], None] | None = None) -> Reference:
    """Run the source backend on the parity inputs (``progress()`` after each prompt/text)."""
    max_new_tokens = max_new_tokens or MAX_NEW_TOKENS
    ref = Reference([], [], [], [], [])
    for prompt in inputs.prompts:
        ids = source.chat_ids(_messages(prompt))
        ref.prompt_ids.append(ids)
        ref.rows.append(source.next_token_logprobs(ids))
        greedy = list(source.stream(ids, max_new_tokens))
        ref.greedy.append(greedy)
        # the source's candidates at every greedy step: rows of ids + greedy[:-1] from the prompt's end
        steps = source.next_token_logprobs(ids + greedy[:-1])[len(ids) - 1:] if greedy else np.empty((0, 1))
        ref.greedy_top.append(top_candidates(steps))
        if progress:
            progress()
    for text in inputs.texts:
        ids = source.tokenize(text)
        ref.text_ids.append(ids)
        ref.text_logprobs.append(source.token_logprobs(ids, 1))
        if progress:
            progress()
    return ref


@dataclass
class Parity:
    positions: int
    mean_kl: float
    max_kl: float
    top1_agreement: float
    greedy_identical: int  # prompts whose whole greedy continuation matches
    greedy_tie_parted: int  # prompts whose continuation parts from the source's at a tie of the source
    greedy_prompts: int
    greedy_mean_prefix: float  # mean number of identical leading tokens
    greedy_min_prefix: int
    max_new_tokens: int
    ppl_source: float
    ppl_artifact: float
    ppl_increase: float  # fraction: 0.05 = +5%
    tokenizer_match: bool
    tokenizer_mismatches: list[str]

    def to_dict(self) -> dict:
        return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in asdict(self).items()}


def compare(ref: Reference, artifact, inputs: ParityInputs, max_new_tokens: int | None = None,
            progress: Callable[[], None] | None = None) -> Parity:
    """Run ``artifact`` on the same ids as ``ref`` and summarise the differences."""
    max_new_tokens = max_new_tokens or MAX_NEW_TOKENS
    kls, matches, prefixes, identical, ties, mismatches = [], [], [], 0, 0, []
    tops = ref.greedy_top or [[] for _ in ref.greedy]
    for prompt, ids, rows, greedy, top in zip(inputs.prompts, ref.prompt_ids, ref.rows, ref.greedy, tops, strict=True):
        if artifact.chat_ids(_messages(prompt)) != ids:
            mismatches.append(f"prompt: {prompt[:50]}")
        other = artifact.next_token_logprobs(ids)
        kls.append(kl_rows(rows, other))
        matches.append(top1_matches(rows, other))
        tokens = list(artifact.stream(ids, max_new_tokens))
        k = common_prefix(greedy, tokens)
        prefixes.append(k)
        identical += int(tokens == greedy)
        if tokens != greedy and k < min(len(tokens), len(top)):
            ties += int(parted_at_tie(top[k], tokens[k]))
        if progress:
            progress()
    art_logprobs = []
    for text, ids in zip(inputs.texts, ref.text_ids, strict=True):
        if artifact.tokenize(text) != ids:
            mismatches.append(f"text: {text[:50]}")
        art_logprobs.append(artifact.token_logprobs(ids, 1))
        if progress:
            progress()
    kl, top1 = np.concatenate(kls), np.concatenate(matches)
    ppl_src, ppl_art = perplexity(ref.text_logprobs), perplexity(art_logprobs)
    return Parity(
        positions=int(kl.size), mean_kl=float(kl.mean()), max_kl=float(kl.max()), top1_agreement=float(top1.mean()),
        greedy_identical=identical, greedy_tie_parted=ties, greedy_prompts=len(prefixes), greedy_mean_prefix=float(np.mean(prefixes)),
        greedy_min_prefix=int(min(prefixes)), max_new_tokens=max_new_tokens,
        ppl_source=ppl_src, ppl_artifact=ppl_art, ppl_increase=ppl_art / ppl_src - 1.0,
        tokenizer_match=not mismatches, tokenizer_mismatches=mismatches,
    )


def judge(parity: Parity, check: str, max_ppl_increase: float) -> list[str]:
    """Failures of ``parity`` under criterion ``check`` (exact | close | lossy); empty means verified."""
    failures = []
    if not parity.tokenizer_match:
        failures.append(f"tokenizer differs from the source on {len(parity.tokenizer_mismatches)} input(s)")
    if check in MIN_TOP1 and parity.top1_agreement < MIN_TOP1[check]:
        failures.append(f"top-1 agreement {parity.top1_agreement:.2%} < {MIN_TOP1[check]:.0%}")
    if check == "exact" and parity.greedy_identical + parity.greedy_tie_parted < parity.greedy_prompts:
        differ = parity.greedy_prompts - parity.greedy_identical - parity.greedy_tie_parted
        failures.append(
            f"greedy continuations differ on {differ} of {parity.greedy_prompts} prompts, not at a tie of the "
            f"source (shortest identical prefix {parity.greedy_min_prefix} tokens)"
        )
    if check == "lossy" and not parity.ppl_increase <= max_ppl_increase:
        failures.append(f"perplexity rose {parity.ppl_increase:+.1%} (allowed {max_ppl_increase:+.0%})")
    return failures
