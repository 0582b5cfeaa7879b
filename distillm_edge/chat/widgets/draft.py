"""The current draft: a labelled, bordered view the answer streams into, rendered as Markdown.

While generating it says so (Esc cancels); once complete it lists the decision keys. The text is
never part of the conversation until the clinician approves it. The chat screen mounts the next
draft's box hidden while idle and shows it at the first text (``turn`` is set then).

The first text lands in a plain one-line ``Static`` composed with the box, and the Markdown view
takes over at the next text (or at :meth:`settle`, when the answer ends): the first paint then
mounts no widget and renders no Markdown block, which cut the chat's time from the model's first
token to the screen from ~5.8 to ~4.1 ms on the 2-core machine (``benchmarks/chat_latency.py``).
A first token that is Markdown syntax ("**", "1.") shows raw for that one frame (~0.1 s).

``first_text_at`` records (``time.perf_counter``) when the first text reached the UI thread,
``first_shown_at`` / ``last_shown_at`` when the first and latest text became visible (after the
screen refreshed), and ``first_text_cpu`` / ``first_shown_cpu`` the UI thread's CPU time then,
which ``benchmarks/chat_latency.py`` reads; the first time, it posts :class:`DraftView.Shown` (the
chat screen's worker waits for it before decoding on).

Test: ``pytest tests/chat/test_chat_app.py tests/chat/test_chat_first_token.py``.
"""

from __future__ import annotations

import time
from functools import cache

from markdown_it import MarkdownIt
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Label, Markdown, Static

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
    DraftView #draft-first { padding: 0 1; }
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
        yield Static("", id="draft-first", markup=False)
        yield Markdown("", id="draft-body", parser_factory=markdown_parser)
        yield Label("", classes="finish")

    @property
    def body(self) -> Markdown:
        return self.query_one("#draft-body", Markdown)

    @property
    def first(self) -> Static:
        """The plain view of the first text, until the Markdown view takes over."""
        return self.query_one("#draft-first", Static)

    async def append(self, text: str) -> None:
        """Add streamed text and re-render; records when it arrived and when it became visible."""
        if not text:
            return
        if not self.text:
            self.first_text_at, self.first_text_cpu = time.perf_counter(), time.thread_time()
            self.text = text
            self.first.update(text)
        else:
            self.text += text
            if not await self.settle():
                await self.body.append(text)  # incremental: only the last block is parsed again
        length = len(self.text)
        self.call_after_refresh(self._shown, length)

    async def settle(self) -> bool:
        """Hand the text from the plain first view to the Markdown view; True if it did (once)."""
        if not self.first.display or not self.text:
            return False
        self.first.display = False
        await self.body.append(self.text)
        return True

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
