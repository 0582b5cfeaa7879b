"""The draft box: where the next answer appears, then the current draft, labelled and rendered as Markdown.

While idle the box is the transcript's last item and says, dimly, that the next answer appears there
as a draft. The first text of an answer turns it into the orange DRAFT box (``turn`` is set then):
while generating it says so (Esc cancels); once complete it says so and the chat lists the decision
keys. The text is never part of the conversation until the clinician approves it.

The box is one widget that draws its own border (Rich's ``Panel``) around Rich's Markdown of the whole
text so far, re-rendered per update (the chat posts at most 10 a second). Because the idle box is
already laid out with one body line, a first text that fits on that line repaints the box alone: the
screen is not laid out again, so the first paint does not grow with the transcript
(``benchmarks/chat_latency.py``; figures in the closing notes of issue #10). A text with no Markdown
syntax (the usual first word) is drawn as plain text, which looks the same and skips the Markdown
parser; ``tests/chat/test_chat_first_token.py`` checks both against each other.

``first_text_at`` records (``time.perf_counter``) when the first text reached the UI thread,
``first_shown_at`` / ``last_shown_at`` when the first and latest text became visible (after the
screen refreshed), and ``first_text_cpu`` / ``first_shown_cpu`` the UI thread's CPU time then,
which ``benchmarks/chat_latency.py`` reads; the first time, it posts :class:`DraftView.Shown` (the
chat screen's worker waits for it before decoding on).

Test: ``pytest tests/chat/test_chat_app.py tests/chat/test_chat_first_token.py``.
"""

from __future__ import annotations

import re
import time

from rich import box
from rich.cells import cell_len
from rich.console import RenderableType
from rich.markdown import Markdown
from rich.panel import Panel
from rich.text import Text
from textual.message import Message
from textual.widget import Widget

GENERATING = "DRAFT · generating… (Esc cancels)"
READY = "DRAFT · not approved · awaiting your review"
IDLE_HINT = "Your next answer appears here, as a draft for your review."
IDLE_HEIGHT = 3  # the idle box: a border, one line, a border
FRAME = 4  # columns the border and the padding take from the body
# One line of letters, spaces and punctuation that Markdown leaves as it is (no digits: "1." starts a list).
_PLAIN = re.compile(r"[^\W\d_](?:[^\W\d_]|[ ,;:'’?/%()])*")


def plain_text(text: str) -> str | None:
    """``text`` as Markdown renders it, when it holds no Markdown syntax (else None)."""
    stripped = text.strip()
    return stripped if _PLAIN.fullmatch(stripped) else None


class DraftView(Widget):
    class Shown(Message):
        """The draft of ``turn`` has its first text on screen."""

        def __init__(self, turn):
            super().__init__()
            self.turn = turn

    COMPONENT_CLASSES = {"draft--border", "draft--title", "draft--finish", "draft--idle"}
    DEFAULT_CSS = """
    DraftView { height: auto; margin: 0 0 1 0; }
    DraftView > .draft--border { color: $warning; }
    DraftView > .draft--title { color: $warning; text-style: bold; }
    DraftView > .draft--finish { color: $text-muted; }
    DraftView > .draft--idle { color: $text-muted; }
    """

    def __init__(self, turn=None, **kwargs):
        super().__init__(**kwargs)
        self.turn = turn  # the chat session's Turn this draft shows (None: the idle box)
        self.text = ""
        self.title = GENERATING
        self.finish_line = ""
        self.first_text_at: float | None = None  # the first text reached the UI thread
        self.first_text_cpu: float | None = None
        self.first_shown_at: float | None = None
        self.first_shown_cpu: float | None = None  # time.thread_time() of the UI thread then
        self.last_shown_at: float | None = None
        self.shown_chars = 0

    def show_turn(self, turn) -> None:
        """Turn the idle box into the draft of ``turn`` (drawn with the next text, or now if none comes)."""
        self.turn = turn
        self.refresh()

    def body(self) -> RenderableType:
        plain = plain_text(self.text)
        return Text(plain) if plain is not None else Markdown(self.text)

    def render(self) -> RenderableType:
        if self.turn is None:
            style = self.get_component_rich_style("draft--idle")
            return Panel(Text(IDLE_HINT, style=style), box=box.ROUNDED, border_style=style, padding=(0, 1))
        finish = self.get_component_rich_style("draft--finish")
        return Panel(self.body(), box=box.HEAVY, padding=(0, 1),
                     border_style=self.get_component_rich_style("draft--border"),
                     title=Text(self.title, style=self.get_component_rich_style("draft--title")), title_align="left",
                     subtitle=Text(self.finish_line, style=finish) if self.finish_line else None,
                     subtitle_align="right")

    def _fits_as_laid_out(self) -> bool:
        """Whether the text keeps the box at the idle box's size (one body line): then only the box
        is repainted, with no screen layout."""
        plain = plain_text(self.text)
        return (self.size.height == IDLE_HEIGHT and plain is not None
                and 0 < cell_len(plain) <= self.size.width - FRAME)

    def append(self, text: str) -> None:
        """Add streamed text and redraw; records when it arrived and when it became visible."""
        if not text:
            return
        if not self.text:
            self.first_text_at, self.first_text_cpu = time.perf_counter(), time.thread_time()
        self.text += text
        self.refresh(layout=not self._fits_as_laid_out())
        self.call_after_refresh(self._shown, len(self.text))

    def _shown(self, length: int) -> None:
        now = time.perf_counter()
        if self.first_shown_at is None and length:
            self.first_shown_at, self.first_shown_cpu = now, time.thread_time()
            self.post_message(self.Shown(self.turn))
        self.last_shown_at, self.shown_chars = now, length

    def finish(self, finish_reason: str, tokens: int) -> None:
        self.title = READY
        why = {"length": "stopped at max tokens", "stop": "complete"}.get(finish_reason, finish_reason)
        self.finish_line = f"{tokens} tokens · {why}"
        self.refresh(layout=True)
