"""Text generation over any backend: streamed text pieces, stop conditions, cancellation, context fit.

Shared by ``chat`` and ``serve`` (and anything else that shows generated text to a person), so
neither writes its own token-to-text loop. A backend's ``stream`` yields token ids; this module
turns them into *visible text deltas*:

- **Incremental detokenization** (:class:`IncrementalDetokenizer`, the scheme of TGI and vLLM).
  Each token decodes a short window of the latest ids, never the whole answer (that was O(n^2) in
  the answer's length), and the window starts one token before the new text, so tokenizers that
  render a token by its neighbour (SentencePiece's leading space, clean-up of spaces) give the
  text a one-shot decode gives. Text that ends in an incomplete UTF-8 sequence (a multi-byte
  character split across tokens decodes to U+FFFD) is held back until a later token completes it,
  so a delta never carries a broken character. End-of-sequence tokens are not shown.
- **Stops.** ``finish_reason`` is ``"stop"`` when the model ends its turn (an EOS/end-of-turn
  token) or emits one of ``settings.stop`` (the text is cut before it), ``"length"`` at
  ``max_new_tokens`` and ``"cancelled"`` when the caller sets ``cancel`` (checked between tokens:
  chat's Esc, serve's client disconnect or shutdown).
- **Context fit.** :func:`fit_messages` drops the oldest turns (never the system prompt or the
  last message) until the prompt plus the room reserved for the answer fits the context window,
  and says how many it dropped so the UI can tell the user.

Test: ``pytest tests/backends/test_generate.py tests/backends/test_generate_detok.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from distillm_edge.errors import UserError


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1 (got {self.max_new_tokens}).")
        if self.temperature < 0:
            raise UserError(f"temperature must be >= 0 (got {self.temperature}); 0 means greedy.")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"top_p must be in (0, 1] (got {self.top_p}).")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass(frozen=True)
class Delta:
    """One streamed piece: the newly visible text and the token ids that produced it."""

    text: str
    token_ids: tuple[int, ...]


@dataclass
class Result:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = ""  # "stop" | "length" | "cancelled"
    prompt_tokens: int = 0
    ttft_s: float = 0.0  # call → first generated token
    total_s: float = 0.0

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


class IncrementalDetokenizer:
    """The text of a growing list of token ids, decoding a window of a few ids per token.

    ``add(token)`` returns the text the token completed ("" while the tail is an incomplete
    character); ``flush()`` returns what is still held back, as a one-shot decode renders it (an
    unfinished character as U+FFFD). The concatenation of everything returned equals
    ``detokenize(ids)`` for tokenizers whose text is the concatenation of their pieces up to the
    first piece's own rendering (byte-level BPE, SentencePiece, llama.cpp's detokenizer).
    """

    def __init__(self, detokenize):
        self._detokenize = detokenize
        self.ids: list[int] = []
        self._start = 0  # the window's first id: one before the text not yet returned
        self._read = 0  # ids[:_read] are returned as text

    def _window(self) -> tuple[str, str]:
        """(text of the window's ids already returned, text of the whole window)."""
        done = self._detokenize(self.ids[self._start:self._read]) if self._read > self._start else ""
        return done, self._detokenize(self.ids[self._start:])

    def add(self, token: int) -> str:
        self.ids.append(token)
        done, text = self._window()
        if len(text) <= len(done) or text.endswith("\ufffd"):
            return ""  # an incomplete character (or a piece with no text yet): wait for the next token
        self._start, self._read = self._read, len(self.ids)
        return text[len(done):]

    def flush(self) -> str:
        if self._read == len(self.ids):
            return ""
        done, text = self._window()
        self._start, self._read = self._read, len(self.ids)
        return text[len(done):]


def _find_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    """Index of the earliest stop string in ``text`` that ends after ``start``, or None."""
    found = [i for i in (text.find(s, max(0, start - len(s) + 1)) for s in stops if s) if i >= 0]
    return min(found) if found else None


def stream_text(backend, prompt_ids: Sequence[int], settings: GenerationSettings,
                cancel: threading.Event | None = None, result: Result | None = None) -> Iterator[Delta]:
    """Generate from ``prompt_ids`` and yield visible text deltas; fill ``result`` at the end.

    The concatenation of the yielded ``Delta.text`` equals ``result.text``. Per token the work is
    bounded by the window and the stop strings' length, not by the answer's length.
    """
    result = result if result is not None else Result()
    result.prompt_tokens = len(prompt_ids)
    started = time.perf_counter()
    eos = backend.eos_token_ids
    detok = IncrementalDetokenizer(backend.detokenize)
    ids = detok.ids  # generated tokens that count as text (no EOS)
    text = ""  # the decoded text so far (cut at a stop string once one appears)
    shown = 0  # text[:shown] is yielded
    pending: list[int] = []  # token ids not yet attributed to a yielded delta
    hold = max([len(s) - 1 for s in settings.stop] + [0])  # a tail that could still become a stop string
    finish, cut = "length", None
    tokens = backend.stream(prompt_ids, settings.max_new_tokens, temperature=settings.temperature,
                            seed=settings.seed, top_p=settings.top_p)
    try:
        for token in tokens:
            if not result.ttft_s:
                result.ttft_s = time.perf_counter() - started
            if token in eos:
                finish = "stop"
                break
            pending.append(int(token))
            piece = detok.add(int(token))
            text += piece
            cut = _find_stop(text, settings.stop, len(text) - len(piece)) if piece else None
            if cut is not None:
                text, finish = text[:cut], "stop"
            end = len(text) if cut is not None else len(text) - hold
            if end > shown:
                yield Delta(text[shown:end], tuple(pending))
                shown, pending = end, []
            if cut is not None:
                break
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
        else:
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()  # stop the backend's generator now (frees its KV state), not at garbage collection
    if finish != "cancelled":
        if finish != "stop" or cut is None:  # the held-back tail: an unfinished character, a stop's prefix
            piece = detok.flush()
            text += piece
            cut = _find_stop(text, settings.stop, len(text) - len(piece))
            text = text[:cut] if cut is not None else text
        if len(text) > shown:
            yield Delta(text[shown:], tuple(pending))
            shown = len(text)
    result.text = text[:shown]
    result.token_ids = list(ids)
    result.finish_reason = finish
    result.total_s = time.perf_counter() - started


def generate_text(backend, prompt_ids: Sequence[int], settings: GenerationSettings,
                  cancel: threading.Event | None = None) -> Result:
    """Non-streaming :func:`stream_text`."""
    result = Result()
    for _ in stream_text(backend, prompt_ids, settings, cancel, result):
        pass
    return result


def context_length(backend) -> int:
    """The context window the backend was opened with (tokens)."""
    n = getattr(backend, "n_ctx", None) or getattr(backend, "context_length", None)
    if not n and getattr(backend, "model", None) is not None:
        config = backend.model.config
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        n = getattr(config, "max_position_embeddings", None)
    return int(n or 2048)


def fit_messages(backend, messages: list[dict], n_ctx: int, reserve: int) -> tuple[list[dict], int]:
    """Drop the oldest turns until ``chat_ids(messages) + reserve <= n_ctx``.

    The system message (if first) and the last message are always kept. Returns the kept messages
    and how many were dropped. Raises :class:`UserError` when even the system prompt and the last
    message do not leave ``reserve`` tokens free.
    """
    if not messages:
        raise UserError("there is nothing to send: the conversation has no messages.")
    system = [messages[0]] if messages[0].get("role") == "system" else []
    history = messages[len(system):]
    dropped = 0
    while True:
        kept = system + history
        used = len(backend.chat_ids(kept))
        if used + reserve <= n_ctx:
            return kept, dropped
        if len(history) <= 1:
            raise UserError(
                f"the prompt needs {used} tokens and the answer {reserve} more, but the context window "
                f"is {n_ctx} tokens: shorten the message or the system prompt, or lower max tokens.")
        # Drop whole turns: a user message and the assistant answer that follows it.
        step = 2 if len(history) > 2 and history[0].get("role") == "user" and history[1].get("role") == "assistant" else 1
        history = history[step:]
        dropped += step
