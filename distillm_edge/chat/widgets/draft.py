"""The current draft: a labelled, bordered Markdown view the answer streams into.

While generating it says so (Esc cancels); once complete it lists the decision keys. The text is
never part of the conversation until the clinician approves it. The chat screen mounts the next
draft's box hidden while idle and shows it at the first text (``turn`` is set then).
``first_text_at`` records (``time.perf_counter``) when the first text reached the UI thread,
``first_shown_at`` / ``last_shown_at`` when the first and latest text became visible (after the
screen refreshed), and ``first_text_cpu`` / ``first_shown_cpu`` the UI thread's CPU time then,
which ``benchmarks/chat_latency.py`` reads; the first time, it posts :class:`DraftView.Shown` (the
chat screen's worker waits for it before decoding on).

Test: ``pytest tests/chat/test_chat_app.py``.
"""

from __future__ import annotations

import time
from functools import cache

from markdown_it import MarkdownIt
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Label, Markdown

GENERATING = "DRAFT · generating… (Esc cancels)"
READY = "DRAFT · not approved · awaiting your review"


@cache
def markdown_parser() -> MarkdownIt:
    """One parser for every streamed piece: Textual's default builds a new one (~1 ms) per append."""
    return MarkdownIt("gfm-like")  # Textual's default configuration


class DraftView(Vertical):
    class Shown(Message):
        """The draft of ``turn`` has its first text on screen."""

        def __init__(self, turn):
            super().__init__()
            self.turn = turn

    DEFAULT_CSS = """
    DraftView { height: auto; border: heavy $warning; border-title-color: $warning;
                border-title-style: bold; padding: 0 0; margin: 0 0 1 0; }
    DraftView Markdown { margin: 0; padding: 0 1; }
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
        yield Markdown("", id="draft-body", parser_factory=markdown_parser)
        yield Label("", classes="finish")

    @property
    def body(self) -> Markdown:
        return self.query_one("#draft-body", Markdown)

    async def append(self, text: str) -> None:
        """Add streamed text and re-render; records when it arrived and when it became visible."""
        if not self.text and text:
            self.first_text_at, self.first_text_cpu = time.perf_counter(), time.thread_time()
        self.text += text
        await self.body.append(text)  # incremental: only the last block is parsed again
        length = len(self.text)
        self.call_after_refresh(self._shown, length)

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
