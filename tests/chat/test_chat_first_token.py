"""What runs between Enter and the first visible token, and that deferring it weakens no supervision.

The question's red-flag check runs after the first token (its banner still shows while streaming,
and one-key approval is still blocked; a cancellation during the prefill still logs the question's
red flags); the draft box the first token shows in was mounted, hidden, while the chat was idle;
the status line skips a screen layout only when its height cannot change.

Run: ``pytest tests/chat/test_chat_first_token.py``.
"""

from __future__ import annotations

import pytest
from chat_helpers import GatedBackend, actions, ask, drafts, posted_of, wait_for
from textual.widgets import Input

from distillm_edge.chat import session as session_module
from distillm_edge.chat.messages import GenerationDone
from distillm_edge.chat.screens.ack import AckScreen
from distillm_edge.chat.session import State
from distillm_edge.chat.widgets.banner import RedFlagBanner
from distillm_edge.chat.widgets.draft import DraftView
from distillm_edge.chat.widgets.message import MessageView
from distillm_edge.chat.widgets.status import StatusLine

pytestmark = pytest.mark.anyio
QUESTION = "What is the usual adult dose of amoxicillin?"
RED_FLAG_QUESTION = "I have crushing chest pain radiating to my left arm and I am sweating"
RULE = "cardiac.chest_pain_radiation"


class Recording:
    """The real backend; its stream notes in ``events`` when the prefill starts and its first token."""

    def __init__(self, backend, events: list):
        self._backend, self.events = backend, events

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def stream(self, ids, max_new_tokens, **kwargs):
        self.events.append("prefill")
        for i, token in enumerate(self._backend.stream(ids, max_new_tokens, **kwargs)):
            if i == 0:
                self.events.append("first token")
            yield token


async def test_question_red_flags_are_checked_after_the_first_token_and_still_block_approval(
        make_session, make_app, tiny_backend, monkeypatch):
    events = []
    real_assess = session_module.assess

    def assess(rules, question, draft=""):
        events.append("assess draft" if draft else "assess question")
        return real_assess(rules, question, draft)

    monkeypatch.setattr(session_module, "assess", assess)
    session = make_session(backend=Recording(tiny_backend, events), max_new_tokens=8)
    posted = []
    async with make_app(session).run_test(message_hook=posted.append) as pilot:
        screen = pilot.app.chat
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        await pilot.press(*RED_FLAG_QUESTION, "enter")
        await wait_for(pilot, lambda: "assess question" in events, "the question's red-flag check")
        await pilot.pause()
        if session.state is State.GENERATING:  # the question's own flags show while the draft streams
            assert RULE in {h.rule_id for h in screen.query_one(RedFlagBanner).hits}
        await wait_for(pilot, lambda: session.state is State.DRAFT, "the draft")
        await pilot.pause()
        assert events.index("prefill") < events.index("first token") < events.index("assess question")
        banner = screen.query_one(RedFlagBanner)
        assert banner.display and RULE in {h.rule_id for h in banner.hits}
        await pilot.press("a")  # one key cannot approve: the acknowledgment screen opens
        await pilot.pause()
        assert isinstance(pilot.app.screen, AckScreen) and session.state is State.DRAFT
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert actions(session) == ["session_start", "cancel"]  # quitting with the draft open logs it
    assert posted_of(posted, GenerationDone)


async def test_a_cancel_during_the_prefill_still_logs_the_questions_red_flags(make_session, make_app, tiny_backend):
    gated = GatedBackend(tiny_backend, before_first=True)
    session = make_session(backend=gated, max_new_tokens=8)
    async with make_app(session).run_test() as pilot:
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        await pilot.press(*RED_FLAG_QUESTION, "enter")
        await wait_for(pilot, gated.started.is_set, "the prefill")
        await pilot.press("escape")
        gated.release.set()
        await wait_for(pilot, lambda: session.state is State.IDLE, "the cancellation")
    cancel = [row for row in session.audit.rows() if row["action"] == "cancel"]
    assert len(cancel) == 1 and RULE in {h["rule_id"] for h in cancel[0]["red_flags"]}


async def test_the_first_text_shows_in_a_draft_box_mounted_while_idle(make_session, make_app, tiny_backend):
    """No widget is composed or mounted for the first paint; after each decision the next hidden box
    is ready below the transcript, so every draft still appears last."""
    gated = GatedBackend(tiny_backend)
    session = make_session(backend=gated, max_new_tokens=8)
    async with make_app(session).run_test() as pilot:
        screen = pilot.app.chat
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        await pilot.pause()
        spare = screen.query_one(DraftView)
        assert not spare.display and not drafts(screen) and list(screen.transcript.children)[-1] is spare
        await pilot.press(*QUESTION, "enter")
        await wait_for(pilot, lambda: gated.first_token.is_set() and drafts(screen)
                       and drafts(screen)[0].first_shown_at is not None, "the first text on screen")
        assert drafts(screen) == [spare] and spare.turn is session.turn
        assert screen.query_one("#question", Input).cursor_blink is False  # no blink repaints meanwhile
        gated.release.set()
        await wait_for(pilot, lambda: session.state is State.DRAFT, "the draft")
        await pilot.press("a")
        await pilot.pause()
        assert session.state is State.IDLE and not drafts(screen)
        assert screen.query_one("#question", Input).cursor_blink is True
        kids = list(screen.transcript.children)
        assert [(k.role, k.content) for k in kids[:-1]] == [("user", QUESTION), ("assistant", session.history[-1]["content"])]
        assert isinstance(kids[-1], DraftView) and not kids[-1].display and kids[-1] is not spare

        gated.release.clear()
        gated.first_token.clear()
        await pilot.press(*"And for children?", "enter")
        await wait_for(pilot, lambda: gated.first_token.is_set() and drafts(screen)
                       and drafts(screen)[0].first_shown_at is not None, "the second draft on screen")
        await pilot.pause()
        gated.release.set()
        await wait_for(pilot, lambda: session.state is State.DRAFT, "the second draft")
        await pilot.pause()
        kids = [k for k in screen.transcript.children if k.display]
        assert isinstance(kids[-1], DraftView) and kids[-2].content == "And for children?"
        assert [k.role for k in kids[:-1] if isinstance(k, MessageView)] == ["user", "assistant", "user"]


async def test_status_line_height_follows_its_text(make_session, make_app):
    """The status skips the screen layout only when one line that fits stays one line."""
    session = make_session()
    async with make_app(session).run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        await pilot.pause()
        status = pilot.app.chat.query_one(StatusLine)

        async def height_after(**show) -> int:
            status.show(**show)
            await pilot.pause()
            return status.size.height

        assert await height_after(status="one line") == 1
        assert await height_after(status="another line", notice="and a notice") == 2
        assert await height_after(notice="") == 1
        assert await height_after(status="x " * 60) == 2  # wraps at 78 columns
        assert await height_after(status="short again") == 1
        assert await height_after(status="still short") == 1
        await ask(pilot, session, QUESTION)
        assert status.size.height == 1 and "Draft ready" in status.status
