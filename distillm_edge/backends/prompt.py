"""Chat prompts tokenized in two pieces: the conversation so far at idle time, the new question at Enter.

When the clinician presses Enter the chat needs the token ids of the whole conversation (system
prompt, every approved exchange, the new question) through the model's chat template. Tokenizing
all of it on the UI thread costs milliseconds that grow with the history (20 exchanges: ~1,400
SmolLM2 tokens, 3-5 ms through llama.cpp) at the moment the model's prefill needs the cores. The conversation so far
is already rendered and tokenized while the chat is idle (to count its tokens), so
:class:`ChatPromptCache` keeps those ids and, at Enter, tokenizes only the new text after them::

    cache = ChatPromptCache(backend)
    cache.prepare([system, *history])       # idle: ids of the conversation so far (counted by the chat)
    ids = cache.ids([system, *history, question])   # Enter: == backend.chat_ids(...), exactly
    cache.last_fast                         # True when ``ids`` reused the prepared ids

It is written here rather than taken from a tokenizer library because it rests on the backends'
own ``chat_text``/``tokenize`` pair (``base.Backend``: ``chat_ids = tokenize(chat_text(...),
add_special_tokens=False)``) and on checks made against the loaded tokenizer, not on any
tokenizer's internals.

Why the result is exactly ``backend.chat_ids(messages)``: llama.cpp (special tokens parsed) and
Hugging Face tokenizers first cut the text at special tokens (``<|im_start|>``, ``<start_of_turn>``,
...; ``Backend.is_special_token``) and run BPE/SentencePiece on each plain piece between them on
its own, so no token spans a special token's edge and the tokens before such a cut depend only on
the text before it. The chat template opens each user turn with one (SmolLM2/ChatML
``<|im_start|>user``, Gemma ``<start_of_turn>user``), so the new text starts where the tokenizer
cuts anyway, and ``ids(prefix + suffix) == ids(prefix) + ids(suffix)``. Nothing of this is assumed
blindly. :meth:`ChatPromptCache.prepare` checks, once per prepared conversation, with this
tokenizer and template: (1) for two unlike probe questions the full tokenization equals the
prepared ids plus the suffix's (this also catches a template that re-renders earlier turns, or a
special token that swallows whitespace before it); (2) the text both probe suffixes begin with, the
user-turn opener, is non-empty and its first token is a special token. :meth:`~ChatPromptCache.ids`
takes the fast path only when both held, the rendered text starts with the prepared text (so a
stale or edited conversation falls back) and the new text starts with that same opener; then
everything up to the end of the opener is the text the probes saw, and everything after the
opener's special token is tokenized alike whether it stands alone or after the prefix. Otherwise it
tokenizes the whole text, the old way.

Check (2) matters: for a template whose turns carry no special token the cut comes from the
pre-tokenizer and BPE, which look past the opener into the question; with turns glued letter to
letter (``userWhat...``) both probes pass yet other questions tokenize differently across the join
(SmolLM2 and Gemma both do), so such templates always take the full path.

The assumption that remains: no special token's text contains the opener's special token and more
(say one token for a whole ``<|im_end|>``, newline, ``<|im_start|>user`` run), because the tokenizer
could match such a token across the join for some questions and not for others. It is a property of
the vocabulary; the tests check it for the SmolLM2 and Gemma-3 GGUF vocabularies.

Test: ``pytest tests/backends/test_prompt.py``.
"""

from __future__ import annotations

import os
from typing import NamedTuple

# Two questions that differ from their first character (so the opener ends where the question
# starts), one ASCII, one with digits, spaces and non-ASCII letters.
PROBES = ("Probe?", "zz 12 éß")


class _Prefix(NamedTuple):
    text: str  # the conversation so far, rendered without a generation prompt
    ids: list[int]  # its tokens
    opener: str  # text every new user turn begins with; "" = the split was not exact, no fast path


class ChatPromptCache:
    """The conversation so far, rendered and tokenized at idle time, reused for the next prompt.

    ``last_fast`` says whether the last :meth:`ids` call reused the prepared ids; ``fast_calls``
    and ``full_calls`` count both outcomes; ``opener`` is "" when the checks turned the fast path
    off for the prepared conversation. A backend without ``chat_text`` always takes the full path
    (``chat_ids``), one without ``is_special_token`` never takes the fast one."""

    def __init__(self, backend):
        self.backend = backend
        self._prefix: _Prefix | None = None
        self.last_fast = False
        self.fast_calls = self.full_calls = 0

    @property
    def opener(self) -> str:
        """The user-turn opener the probes found ("" when the fast path is off for this prefix)."""
        return self._prefix.opener if self._prefix is not None else ""

    def prepare(self, messages: list[dict[str, str]]) -> list[int]:
        """Render and tokenize the conversation so far (idle time); returns its ids.

        Equal to ``backend.chat_ids(messages, add_generation_prompt=False)``. The split check runs
        once per distinct rendered text (two more tokenizations of the whole conversation: ~8 ms at
        20 SmolLM2 exchanges, while idle); preparing the same conversation again costs one render."""
        if not hasattr(self.backend, "chat_text"):
            self._prefix = None
            return list(self.backend.chat_ids(messages, add_generation_prompt=False))
        text = self.backend.chat_text(messages, add_generation_prompt=False)
        if self._prefix is not None and self._prefix.text == text:
            return list(self._prefix.ids)
        self._prefix = None  # never leave the previous conversation's ids in place if a check raises
        ids = self._tokenize(text)
        self._prefix = _Prefix(text, ids, self._opener(messages, text, ids))
        return list(ids)

    def ids(self, messages: list[dict[str, str]]) -> list[int]:
        """``backend.chat_ids(messages)`` (with the generation prompt), reusing the prepared ids when
        ``messages`` extend the prepared conversation by a user turn the probes vouch for."""
        if not hasattr(self.backend, "chat_text"):
            return self._counted(False, list(self.backend.chat_ids(messages)))
        text = self.backend.chat_text(messages)
        prefix = self._prefix  # read once: prepare() replaces it whole
        if (prefix is None or not prefix.opener or not text.startswith(prefix.text)
                or not text.startswith(prefix.opener, len(prefix.text))):
            return self._counted(False, self._tokenize(text))
        return self._counted(True, [*prefix.ids, *self._tokenize(text[len(prefix.text):])])

    def _counted(self, fast: bool, ids: list[int]) -> list[int]:
        self.last_fast = fast
        if fast:
            self.fast_calls += 1
        else:
            self.full_calls += 1
        return ids

    def _tokenize(self, text: str) -> list[int]:
        return list(self.backend.tokenize(text, add_special_tokens=False))

    def _opener(self, messages: list[dict[str, str]], text: str, ids: list[int]) -> str:
        """The text both probe suffixes begin with, or "" (fast path off) when it does not start with
        a special token, or splitting after ``text`` changed the tokens of either probe conversation
        (or the template re-rendered the conversation so far)."""
        suffixes = []
        for probe in PROBES:
            full = self.backend.chat_text([*messages, {"role": "user", "content": probe}])
            if not full.startswith(text):
                return ""
            suffix = full[len(text):]
            if self._tokenize(full) != [*ids, *self._tokenize(suffix)]:
                return ""
            suffixes.append(suffix)
        opener = os.path.commonprefix(suffixes)
        return opener if self._starts_with_special(opener) else ""

    def _starts_with_special(self, text: str) -> bool:
        first = self._tokenize(text)[:1]
        is_special = getattr(self.backend, "is_special_token", None)
        return bool(first) and is_special is not None and is_special(first[0])
