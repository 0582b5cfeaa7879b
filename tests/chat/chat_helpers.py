"""Helpers for the chat tests: drive the app with the pilot, read the audit log, and a backend
wrapper whose stream pauses before or after its first token until the test releases it.

Run: imported by ``tests/chat/test_chat_*.py``.
"""

from __future__ import annotations

import threading
import time

from distillm_edge.chat.session import ChatSession, State


class GatedBackend:
    """The real backend, with a stream that pauses after its first token (or, with
    ``before_first``, before it: a long prefill) until ``release`` is set."""

    def __init__(self, backend, before_first: bool = False):
        self._backend = backend
        self.before_first = before_first
        self.release = threading.Event()
        self.first_token = threading.Event()
        self.started = threading.Event()

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def stream(self, ids, max_new_tokens, **kwargs):
        self.started.set()
        if self.before_first:
            self.release.wait(timeout=60)
        for i, token in enumerate(self._backend.stream(ids, max_new_tokens, **kwargs)):
            yield token
            if i == 0 and not self.before_first:
                self.first_token.set()
                self.release.wait(timeout=60)


async def wait_for(pilot, condition, what: str, timeout: float = 120.0) -> None:
    """Let the app run until ``condition()`` holds (the timeout only guards against a hang)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def ask(pilot, session: ChatSession, question: str) -> None:
    """Type a question, press Enter, and wait for its draft."""
    await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
    await pilot.press(*question, "enter")
    await wait_for(pilot, lambda: session.state is State.DRAFT, "the draft")
    await pilot.pause()


def posted_of(posted: list, cls) -> list:
    """Messages of type ``cls`` in the order posted, once each (a bubbling message is seen per hop)."""
    seen, out = set(), []
    for message in posted:
        if isinstance(message, cls) and id(message) not in seen:
            seen.add(id(message))
            out.append(message)
    return out


def drafts(screen) -> list:
    """The drafts on screen (the chat keeps the next one's box mounted: the idle box, or hidden)."""
    from distillm_edge.chat.widgets.draft import DraftView

    return [view for view in screen.query(DraftView) if view.display and view.turn is not None]


def screen_text(app) -> str:
    """The text on the app's screen as last composited, one line per row."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def actions(session: ChatSession) -> list[str]:
    return [row["action"] for row in session.audit.rows()]
