"""The current draft: a labelled, bordered view the answer streams into, rendered as Markdown.

While generating it says so (Esc cancels); once complete it lists the decision keys. The text is
never part of the conversation until the clinician approves it. The chat screen mounts the next
draft's box hidden while idle and shows it at the first text (``turn`` is set then).

The body is one ``Static`` that shows Rich's Markdown of the whole text so far, re-rendered per
update (the chat posts at most 10 a second; ~2.5 ms for 260 words). Textual's Markdown widget mounts
a widget per block instead: the first paint then mounted one, and every later layout visits them
all. With this body the first paint mounts nothing (``benchmarks/chat_latency.py``: the chat's time
from the model's first token to the screen fell from ~5.8 to ~4.9 ms in a new conversation, and with
20 exchanges on screen from ~24 to ~7.6 ms).

``first_text_at`` records (``time.perf_counter``) when the first text reached the UI thread,
``first_shown_at`` / ``last_shown_at`` when the first and latest text became visible (after the
screen refreshed), and ``first_text_cpu`` / ``first_shown_cpu`` the UI thread's CPU time then,
which ``benchmarks/chat_latency.py`` reads; the first time, it posts :class:`DraftView.Shown` (the
chat screen's worker waits for it before decoding on).

Test: ``pytest tests/chat/test_chat_app.py tests/chat/test_chat_first_token.py``.
"""

from __future__ import annotations

import time

from rich.markdown import Markdown
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Label, Static

GENERATING = "DRAFT · generating… (Esc cancels)"
READY = "DRAFT · not approved · awaiting your review"


class DraftView(Vertical):
    class Shown(Message):
        """The draft of ``turn`` has its first text on screen."""

        def __init__(self, turn):
            super().__init__()
            self.turn = turn

    DEFAULT_CSS = """
    DraftView { height: auto; border: heavy $warning; border-title-color: $warning;
                border-title-style: bold; padding: 0 0; margin: 0 0 1 0; }
    DraftView #draft-body { padding: 0 1; }
    DraftView .finish { color: $text-muted; padding: 0 1; }
    """

    def __init__(self, turn=None, **kwargs):
        super().__init__(**kwargs)
        self.turn = turn  # the chat session's Turn this draft shows
        self.text = ""
        self.first_text_at: float | None = None  # the first text reached the UI thread
        self.first_text_cpu: float | None = None
        self.first_shown_at: float | None = None
        self.first_shown_cpu: float | None = None  # time.thread_time() of the UI thread then
        self.last_shown_at: float | None = None
        self.shown_chars = 0
        self.border_title = GENERATING

    def compose(self) -> ComposeResult:
        yield Static("", id="draft-body")
        yield Label("", classes="finish")

    @property
    def body(self) -> Static:
        return self.query_one("#draft-body", Static)

    def append(self, text: str) -> None:
        """Add streamed text and re-render; records when it arrived and when it became visible."""
        if not text:
            return
        if not self.text:
            self.first_text_at, self.first_text_cpu = time.perf_counter(), time.thread_time()
        self.text += text
        self.body.update(Markdown(self.text))
        self.call_after_refresh(self._shown, len(self.text))

    def _shown(self, length: int) -> None:
        now = time.perf_counter()
        if self.first_shown_at is None and length:
            self.first_shown_at, self.first_shown_cpu = now, time.thread_time()
            self.post_message(self.Shown(self.turn))
        self.last_shown_at, self.shown_chars = now, length

    def finish(self, finish_reason: str, tokens: int) -> None:
        self.border_title = READY
        why = {"length": "stopped at max tokens", "stop": "complete"}.get(finish_reason, finish_reason)
        self.query_one(".finish", Label).update(f"{tokens} tokens · {why}")
