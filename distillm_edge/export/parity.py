"""Proof that an exported artifact still behaves like its source model.

The source (PyTorch, float32) and the artifact (llama.cpp or ONNX Runtime, through the shared
``Backend`` interface) see the same token ids — the fixed medical prompts shipped in
``parity_prompts.json``, each run through the source's chat template — and we measure:

- mean KL(source ‖ artifact) of the next-token distributions over every prompt position;
- top-1 agreement: the share of those positions where both predict the same token;
- greedy continuations of 64 tokens: per prompt, how many leading tokens are identical;
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
from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np

MAX_NEW_TOKENS = 64
MIN_TOP1 = {"exact": 0.99, "close": 0.97}


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


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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
        ref.greedy.append(list(source.stream(ids, max_new_tokens)))
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
    kls, matches, prefixes, identical, mismatches = [], [], [], 0, []
    for prompt, ids, rows, greedy in zip(inputs.prompts, ref.prompt_ids, ref.rows, ref.greedy, strict=True):
        if artifact.chat_ids(_messages(prompt)) != ids:
            mismatches.append(f"prompt: {prompt[:50]}")
        other = artifact.next_token_logprobs(ids)
        kls.append(kl_rows(rows, other))
        matches.append(top1_matches(rows, other))
        tokens = list(artifact.stream(ids, max_new_tokens))
        prefixes.append(common_prefix(greedy, tokens))
        identical += int(tokens == greedy)
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
        greedy_identical=identical, greedy_prompts=len(prefixes), greedy_mean_prefix=float(np.mean(prefixes)),
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
    if check == "exact" and parity.greedy_identical < parity.greedy_prompts:
        failures.append(
            f"greedy continuations differ on {parity.greedy_prompts - parity.greedy_identical} of "
            f"{parity.greedy_prompts} prompts (shortest identical prefix {parity.greedy_min_prefix} tokens)"
        )
    if check == "lossy" and not parity.ppl_increase <= max_ppl_increase:
        failures.append(f"perplexity rose {parity.ppl_increase:+.1%} (allowed {max_ppl_increase:+.0%})")
    return failures
