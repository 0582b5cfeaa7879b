"""MCQ scoring against a naive per-choice reference, on the fast (one pass) and the multi-token path.

Run: ``pytest tests/eval/test_scoring.py`` (a 2-layer random Llama; seconds).
"""

from __future__ import annotations

import numpy as np
import pytest

from distillm_edge.backends.base import reference_continuation_logprobs
from distillm_edge.eval import scoring
from distillm_edge.eval.mcq_data import MCQItem
from distillm_edge.eval.prompts import MCQTask, context, continuations, mmlu_description

ITEMS = (
    MCQItem("t:1", "Which vessel carries oxygenated blood from the lungs?",
            ("Pulmonary artery", "Pulmonary vein", "Aorta", "Vena cava"), 1),
    MCQItem("t:2", "Insulin is secreted by", ("alpha cells", "beta cells", "delta cells", "acinar cells"), 1),
    MCQItem("t:3", "A deficiency of vitamin B12 causes", ("scurvy", "rickets", "pernicious anemia", "pellagra"), 2),
)


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    import torch

    from distillm_edge.backends.torch_backend import TorchBackend

    before = torch.get_num_threads()
    backend = TorchBackend(str(tiny_llama_dir), threads=1)
    yield backend
    torch.set_num_threads(before)


class SplitLetters:
    """A backend whose tokenizer spells " A".." D" as two tokens, to force multi-token scoring."""

    def __init__(self, inner):
        self.inner = inner
        self.split = {inner.tokenize(" " + c, add_special_tokens=False)[0]: c for c in "ABCD"}
        self.space = inner.tokenize(" ", add_special_tokens=False)[0]

    def tokenize(self, text, add_special_tokens=True):
        out = []
        for t in self.inner.tokenize(text, add_special_tokens):
            out += [self.space, self.inner.tokenize(self.split[t], add_special_tokens=False)[0]] if t in self.split else [t]
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def naive_scores(backend, task):
    out = np.zeros((len(task.items), len(task.choices)))
    for i, item in enumerate(task.items):
        ctx = context(task, item)
        ctx_ids = backend.tokenize(ctx)
        for j, cont in enumerate(continuations(task)):
            cont_ids = backend.tokenize(ctx + cont)[len(ctx_ids):]
            (lp, _), = reference_continuation_logprobs(backend, [(ctx_ids, cont_ids)])
            out[i, j] = lp.sum()
    return out


@pytest.mark.parametrize("shots", [0, 2])
def test_fast_path_matches_naive(tiny, shots):
    task = MCQTask("mmlu_medical/anatomy", "mmlu_medical", "mmlu", ITEMS, ITEMS[:shots], mmlu_description("anatomy"))
    scores = scoring.score_task(tiny, task)
    assert (scores.single_token, scores.multi_token) == (3, 0)
    np.testing.assert_allclose(scores.loglik, naive_scores(tiny, task), atol=1e-4)
    np.testing.assert_array_equal(scores.gold, [1, 1, 2])


@pytest.mark.parametrize("shots", [0, 2])
def test_multi_token_path_matches_naive(tiny, shots):
    backend = SplitLetters(tiny)
    task = MCQTask("mmlu_medical/anatomy", "mmlu_medical", "mmlu", ITEMS, ITEMS[:shots], mmlu_description("anatomy"))
    scores = scoring.score_task(backend, task)
    assert (scores.single_token, scores.multi_token) == (0, 3)
    np.testing.assert_allclose(scores.loglik, naive_scores(backend, task), atol=1e-4)


def test_pubmedqa_choices_and_trailing_space_handling(tiny):
    item = MCQItem("p", "Does aspirin prevent stroke?", ("yes", "no", "maybe"), 0, "Trial results.")
    task = MCQTask("pubmedqa", "pubmedqa", "pubmedqa", (item,))
    scores = scoring.score_task(tiny, task)
    np.testing.assert_allclose(scores.loglik, naive_scores(tiny, task), atol=1e-4)
    ctx_ids, conts = scoring.encode_choices(tiny, "Answer: ", [" yes"])  # the space moves to the continuation
    assert tiny.detokenize(ctx_ids) == "Answer:" and tiny.detokenize(conts[0]) == "  yes"


def test_common_prefix():
    assert scoring.common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert scoring.common_prefix([[5], [6]]) == 0
    assert scoring.common_prefix([]) == 0
