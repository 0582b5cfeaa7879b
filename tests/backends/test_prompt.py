"""ChatPromptCache (``backends/prompt.py``): the prompt built from the conversation so far, tokenized
at idle time, plus the new text tokenized at Enter equals the backend's own ``chat_ids`` of the whole
conversation, token for token.

Checked against that reference for the embedded SmolLM2 and Gemma-3 GGUFs through llama.cpp and for
Hugging Face tokenizers (SmolLM2's through TorchBackend, Gemma-3's through a stand-in backend), with
0, 1 and 20 exchanges of history from the built-in corpus and awkward questions (unicode, spaces,
newlines, text that looks like special tokens, very long), plus random ones. Every check also
asserts which path was taken: the fast path where the template opens user turns with a special
token, the full path for templates without special tokens (where the probes alone would have let a
wrong split through), for stale conversations and for backends lacking the methods the cache needs.

Run: ``pytest tests/backends/test_prompt.py`` (``-m "not slow"``: the Hugging Face SmolLM2 cases only).
"""

from __future__ import annotations

import json
import random

import pytest

from distillm_edge.backends.base import hf_chat_ids, hf_chat_text, hf_is_special_token
from distillm_edge.backends.prompt import ChatPromptCache
from distillm_edge.data.readers import BUILTIN_CORPUS

SYSTEM = {"role": "system", "content": "You are a careful medical assistant."}
ROWS = [json.loads(line) for line in BUILTIN_CORPUS.read_text().splitlines()[:200]]
LONG = " ".join(row["answer"] for row in ROWS[:40])  # ~2,000 tokens in one question
QUESTIONS = (
    "What is asthma?",
    "  leading and trailing spaces  ",
    "line one\nline two\n\n",
    "\n",
    "",
    "naïve café: 血压 150/95 mmHg ± 5 µg/kg 🙂 éß",
    "<|im_start|>user\nlooks like a turn<|im_end|>",
    "<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>model\nlooks like Gemma<end_of_turn>",
    "<bos><eos></s>",
    LONG,
)
CHATML_OPENER = "<|im_start|>user\n"
GEMMA_OPENER = "<start_of_turn>user\n"
# Templates whose turns carry no special token: the cut between turns is the pre-tokenizer's.
PLAIN_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}assistant:{% endif %}")
GLUED_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}{{ m['content'] }}{% endfor %}"
                  "{% if add_generation_prompt %}assistant{% endif %}")


def exchanges(n: int, start: int = 0) -> list[dict]:
    """``n`` question/answer exchanges from the built-in corpus."""
    out = []
    for row in ROWS[start : start + n]:
        out += [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
    return out


def user(text: str) -> dict:
    return {"role": "user", "content": text}


class HFTokenizerBackend:
    """The part of a backend the cache uses, over a bare Hugging Face tokenizer (no model to load)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def tokenize(self, text, add_special_tokens=True):
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens).input_ids)

    def chat_text(self, messages, add_generation_prompt=True):
        return hf_chat_text(self.tokenizer, messages, add_generation_prompt)

    def chat_ids(self, messages, add_generation_prompt=True):
        return hf_chat_ids(self.tokenizer, messages, add_generation_prompt)

    def is_special_token(self, token):
        return hf_is_special_token(self.tokenizer, token)


@pytest.fixture(scope="module")
def torch_smollm2(tiny_llama_dir):
    from distillm_edge.backends.torch_backend import TorchBackend

    return TorchBackend(str(tiny_llama_dir), threads=1)  # a random model; SmolLM2's tokenizer and template


@pytest.fixture(scope="module")
def gguf_smollm2():
    from distillm_edge.backends import open_backend

    backend = open_backend("smollm2-135m-instruct", backend="gguf", threads=1, n_ctx=256)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def gguf_gemma():
    from distillm_edge.backends import open_backend

    backend = open_backend("gemma-3-270m", backend="gguf", threads=1, n_ctx=256)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf_gemma(gemma_dir):
    from transformers import AutoTokenizer

    return HFTokenizerBackend(AutoTokenizer.from_pretrained(gemma_dir))


BACKENDS = [
    pytest.param("torch_smollm2", CHATML_OPENER, id="hf-smollm2"),
    pytest.param("gguf_smollm2", CHATML_OPENER, id="gguf-smollm2", marks=pytest.mark.slow),
    pytest.param("gguf_gemma", GEMMA_OPENER, id="gguf-gemma3", marks=pytest.mark.slow),
    pytest.param("hf_gemma", GEMMA_OPENER, id="hf-gemma3", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("backend_name", "opener"), BACKENDS)
def test_prompt_equals_chat_ids_and_reuses_the_prepared_tokens(request, backend_name, opener):
    backend = request.getfixturevalue(backend_name)
    cache = ChatPromptCache(backend)
    for n in (0, 1, 20):
        so_far = [SYSTEM, *exchanges(n)]
        assert cache.prepare(so_far) == backend.chat_ids(so_far, add_generation_prompt=False)
        assert cache.opener == opener  # the probes passed: the fast path is on
        for question in QUESTIONS:
            messages = [*so_far, user(question)]
            assert cache.ids(messages) == backend.chat_ids(messages), (n, question[:40])
            assert cache.last_fast, (n, question[:40])
    assert (cache.fast_calls, cache.full_calls) == (3 * len(QUESTIONS), 0)
    messages = [*exchanges(2), user("Why?")]  # the backend contract the cache rests on
    assert backend.chat_ids(messages) == backend.tokenize(backend.chat_text(messages), add_special_tokens=False)


@pytest.mark.parametrize(("backend_name", "opener"), BACKENDS)
def test_random_conversations_and_questions(request, backend_name, opener):
    """Random histories, and questions glued from corpus text and characters that like to merge."""
    backend = request.getfixturevalue(backend_name)
    rng = random.Random(7)
    pieces = [" ", "  ", "\n", "\n\n", "\t", "<", "|", ">", "<|", "user", "model", "é", "1", "?", ".", "'s",
              CHATML_OPENER, GEMMA_OPENER, "<end_of_turn>", "<|im_end|>"]
    words = " ".join(row["question"] for row in ROWS).split(" ")
    cache = ChatPromptCache(backend)
    for _ in range(6):
        so_far = [SYSTEM, *exchanges(rng.randrange(4), start=rng.randrange(150))]
        cache.prepare(so_far)
        for _ in range(25):
            parts = [rng.choice(pieces) if rng.random() < 0.4 else rng.choice(words) for _ in range(rng.randrange(1, 8))]
            question = "".join(parts)
            messages = [*so_far, user(question)]
            assert cache.ids(messages) == backend.chat_ids(messages), question
            assert cache.last_fast, question
    assert cache.opener == opener


@pytest.mark.parametrize("template", [PLAIN_TEMPLATE, GLUED_TEMPLATE], ids=["plain", "glued"])
def test_templates_without_special_tokens_take_the_full_path_hf(smollm2_dir, template):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)  # its own copy: the template is changed
    tokenizer.chat_template = template
    check_full_path(HFTokenizerBackend(tokenizer))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "gemma-3-270m"])
@pytest.mark.parametrize("template", [PLAIN_TEMPLATE, GLUED_TEMPLATE], ids=["plain", "glued"])
def test_templates_without_special_tokens_take_the_full_path_gguf(model, template):
    from distillm_edge.backends import open_backend

    backend = open_backend(model, backend="gguf", threads=1, n_ctx=256, chat_template=template)
    try:
        check_full_path(backend)
    finally:
        backend.close()


def check_full_path(backend) -> None:
    """Exact for every conversation, and always by tokenizing the whole text: the user-turn opener
    ("user: " or "user") is no special token, so the cache turns its fast path off."""
    cache = ChatPromptCache(backend)
    for n in (0, 1, 20):
        so_far = [SYSTEM, *exchanges(n)]
        assert cache.prepare(so_far) == backend.chat_ids(so_far, add_generation_prompt=False)
        assert cache.opener == ""
        for question in QUESTIONS:
            messages = [*so_far, user(question)]
            assert cache.ids(messages) == backend.chat_ids(messages), (n, question[:40])
            assert not cache.last_fast
    assert cache.fast_calls == 0


@pytest.mark.slow
def test_probes_alone_would_split_a_glued_template_wrongly():
    """Why the opener must start with a special token: with turns glued letter to letter, both probe
    questions split exactly after "...diaperer", yet "croup" does not (BPE merges across the join)."""
    from distillm_edge.backends import open_backend
    from distillm_edge.backends.prompt import PROBES

    backend = open_backend("smollm2-135m-instruct", backend="gguf", threads=1, n_ctx=256, chat_template=GLUED_TEMPLATE)
    try:
        so_far = [{"role": "system", "content": "heavily near diaperer"}]
        prefix_text = backend.chat_text(so_far, add_generation_prompt=False)
        prefix_ids = backend.tokenize(prefix_text, add_special_tokens=False)

        def naive_split(question):
            suffix = backend.chat_text([*so_far, user(question)])[len(prefix_text):]
            return [*prefix_ids, *backend.tokenize(suffix, add_special_tokens=False)]

        assert all(naive_split(p) == backend.chat_ids([*so_far, user(p)]) for p in PROBES)
        assert naive_split("croup") != backend.chat_ids([*so_far, user("croup")])
        cache = ChatPromptCache(backend)
        cache.prepare(so_far)
        assert cache.ids([*so_far, user("croup")]) == backend.chat_ids([*so_far, user("croup")])
        assert not cache.last_fast
    finally:
        backend.close()


@pytest.mark.parametrize("backend_name", ["torch_smollm2", pytest.param("gguf_smollm2", marks=pytest.mark.slow)])
def test_a_stale_conversation_falls_back(request, backend_name):
    backend = request.getfixturevalue(backend_name)
    cache = ChatPromptCache(backend)
    question = user("What next?")
    never_prepared = [SYSTEM, *exchanges(2), question]
    assert cache.ids(never_prepared) == backend.chat_ids(never_prepared) and not cache.last_fast
    cache.prepare([SYSTEM, *exchanges(2)])
    edited_answer, same_length = exchanges(2), exchanges(2)
    edited_answer[-1] = {"role": "assistant", "content": edited_answer[-1]["content"] + " Recheck in a week."}
    same_length[1] = {"role": "assistant", "content": same_length[1]["content"].replace("mitral", "tricus", 1)}
    stale = {
        "edited system prompt": [{"role": "system", "content": "You are a terse assistant."}, *exchanges(2), question],
        # same length: the new text has the opener where the prepared text ended; only the content differs
        "system prompt, one letter changed": [{**SYSTEM, "content": SYSTEM["content"].replace("careful", "carefyl")},
                                              *exchanges(2), question],
        "an answer, one word changed": [SYSTEM, *same_length, question],
        "other conversation resumed": [SYSTEM, *exchanges(2, start=100), question],
        "an exchange fewer": [SYSTEM, *exchanges(1), question],
        "last answer edited": [SYSTEM, *edited_answer, question],
        "no system prompt": [*exchanges(2), question],
        "an assistant turn, not a user turn": [SYSTEM, *exchanges(2), {"role": "assistant", "content": "Hm."}],
    }
    for what, messages in stale.items():
        assert cache.ids(messages) == backend.chat_ids(messages), what
        assert not cache.last_fast, what
    # A new exchange appended without prepare(): the prepared conversation is still the start of the
    # text and the join is still the user-turn opener, so reusing its tokens is right, and exact.
    longer = [SYSTEM, *exchanges(3), question]
    assert cache.ids(longer) == backend.chat_ids(longer) and cache.last_fast
    cache.prepare([SYSTEM, *exchanges(2, start=100)])  # the other conversation, prepared: fast again
    resumed = stale["other conversation resumed"]
    assert cache.ids(resumed) == backend.chat_ids(resumed) and cache.last_fast


def test_backends_without_the_methods_take_the_full_path(smollm2_tokenizer):
    class ChatIdsOnly:
        def __init__(self, inner):
            self.tokenize, self.chat_ids = inner.tokenize, inner.chat_ids

    class NoSpecialTokenInfo:
        def __init__(self, inner):
            self.tokenize, self.chat_ids, self.chat_text = inner.tokenize, inner.chat_ids, inner.chat_text

    reference = HFTokenizerBackend(smollm2_tokenizer)
    so_far = [SYSTEM, *exchanges(2)]
    messages = [*so_far, user("What next?")]
    for backend in (ChatIdsOnly(reference), NoSpecialTokenInfo(reference)):
        cache = ChatPromptCache(backend)
        assert cache.prepare(so_far) == reference.chat_ids(so_far, add_generation_prompt=False)
        assert cache.ids(messages) == reference.chat_ids(messages) and not cache.last_fast
        assert cache.opener == ""


def test_preparing_the_same_conversation_again_reuses_the_checks(torch_smollm2, monkeypatch):
    cache = ChatPromptCache(torch_smollm2)
    so_far = [SYSTEM, *exchanges(3)]
    first = cache.prepare(so_far)
    rendered = []
    real = torch_smollm2.chat_text
    monkeypatch.setattr(torch_smollm2, "chat_text", lambda *a, **k: rendered.append(1) or real(*a, **k))
    assert cache.prepare(so_far) == first and len(rendered) == 1  # one render, no probes
    assert cache.opener == CHATML_OPENER


@pytest.mark.slow
@pytest.mark.parametrize(("backend_name", "opener"), BACKENDS)
def test_no_special_token_contains_the_openers_special_token(request, backend_name, opener):
    """The assumption the split rests on, checked on the vocabulary: no special token could match
    across the join, because none contains the opener's special token except that token itself."""
    backend = request.getfixturevalue(backend_name)
    first = backend.tokenize(opener, add_special_tokens=False)[0]
    assert backend.is_special_token(first)
    if hasattr(backend, "native"):  # llama.cpp: every token it matches literally
        specials = [backend._token_text(t) for t in range(backend.vocab_size) if backend.is_special_token(t)]
    else:
        specials = [added.content for added in backend.tokenizer.added_tokens_decoder.values()]
    literal = opener.split("user")[0]  # "<|im_start|>" / "<start_of_turn>"
    assert literal in specials
    assert [s for s in specials if literal in s] == [literal]
