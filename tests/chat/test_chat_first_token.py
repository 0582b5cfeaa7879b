"""What runs between Enter and the first visible token, and that deferring it weakens no supervision.

Enter changes nothing on screen (no layout) until the first text, which then brings Enter's effects
(input cleared, "Generating…"); the question's red-flag check runs after the first token (its banner
still shows while streaming, and one-key approval is still blocked; a cancellation during the
prefill still logs the question's red flags); the draft box the first token shows in is the idle
box laid out while the chat was idle, so a first word repaints only that box (no layout); Enter
never reaches the input (no cursor repaint); the answer streams into the one box without mounting
a widget, plain text drawn exactly as Markdown would draw it; each approved message is one widget;
the status line skips a screen layout only when its height cannot change.

Run: ``pytest tests/chat/test_chat_first_token.py``.
"""

from __future__ import annotations

import io
import threading
import time

import pytest
from chat_helpers import GatedBackend, actions, ask, drafts, posted_of, screen_text, wait_for
from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.text import Text
from textual.app import App
from textual.screen import Screen
from textual.widgets import Input

from distillm_edge.backends.generate import GenerationSettings
from distillm_edge.chat import session as session_module
from distillm_edge.chat.app import build_app
from distillm_edge.chat.messages import GenerationDone
from distillm_edge.chat.screens.ack import AckScreen
from distillm_edge.chat.session import ChatSession, State
from distillm_edge.chat.store import ConversationStore
from distillm_edge.chat.widgets.banner import RedFlagBanner
from distillm_edge.chat.widgets.draft import IDLE_HINT, DraftView, plain_text
from distillm_edge.chat.widgets.message import MessageView
from distillm_edge.chat.widgets.status import StatusLine
from distillm_edge.safety.audit import AuditLog

pytestmark = pytest.mark.anyio
QUESTION = "What is the usual adult dose of amoxicillin?"
RED_FLAG_QUESTION = "I have crushing chest pain radiating to my left arm and I am sweating"
RULE = "cardiac.chest_pain_radiation"


@pytest.fixture
def layouts(monkeypatch) -> list[float]:
    """``time.perf_counter()`` of every screen layout (``Screen._refresh_layout``) while the test runs."""
    stamps: list[float] = []
    real_layout = Screen._refresh_layout

    def counting(self, *args, **kwargs):
        stamps.append(time.perf_counter())
        return real_layout(self, *args, **kwargs)

    monkeypatch.setattr(Screen, "_refresh_layout", counting)
    return stamps


class Scripted:
    """The real backend's tokenizer, with a scripted answer as its tokens (for what the screen does
    with a known first word)."""

    def __init__(self, backend, answer: str):
        self._backend, self.answer = backend, answer

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def stream(self, ids, max_new_tokens, **kwargs):
        yield from self._backend.tokenize(self.answer, add_special_tokens=False)[:max_new_tokens]


class Recording:
    """The real backend; its stream notes in ``events`` when the prefill starts and its first token,
    and in ``threads`` the thread it runs on."""

    def __init__(self, backend, events: list, threads: list | None = None):
        self._backend, self.events, self.threads = backend, events, threads if threads is not None else []

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def stream(self, ids, max_new_tokens, **kwargs):
        self.events.append("prefill")
        self.threads.append(threading.get_ident())
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
    """No widget is composed or mounted for the first paint: the idle box at the transcript's end
    becomes the draft; after each decision the next box is ready below the transcript, so every draft
    still appears last."""
    gated = GatedBackend(tiny_backend)
    session = make_session(backend=gated, max_new_tokens=8)
    async with make_app(session).run_test() as pilot:
        screen = pilot.app.chat
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        await pilot.pause()
        spare = screen.query_one(DraftView)
        assert spare.display and spare.turn is None and not drafts(screen)
        assert list(screen.transcript.children)[-1] is spare and IDLE_HINT in screen_text(pilot.app)
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
        assert isinstance(kids[-1], DraftView) and kids[-1].display and kids[-1] is not spare
        assert kids[-1].turn is None  # the idle box again, below the approved exchange

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
        assert isinstance(kids[-1], DraftView) and kids[-1].turn is session.turn
        assert kids[-2].content == "And for children?"
        assert not screen.spare.display  # the box a regenerated answer would use waits hidden
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


async def test_enter_lays_out_nothing_until_the_first_text(make_session, make_app, tiny_backend, layouts):
    """During the prefill the screen is not laid out (its UI CPU would delay the first token); the
    first text brings the draft box, then the question, the cleared input and the status."""
    gated = GatedBackend(tiny_backend, before_first=True)
    session = make_session(backend=gated, max_new_tokens=8)
    async with make_app(session).run_test() as pilot:
        screen = pilot.app.chat
        screen.FEEDBACK_S = 600.0  # only the first text brings Enter's effects here
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        await pilot.press(*QUESTION)
        await pilot.pause()
        status_before = screen.query_one(StatusLine).status
        layouts.clear()
        await pilot.press("enter")
        await wait_for(pilot, gated.started.is_set, "the prefill")
        for _ in range(5):
            await pilot.pause(0.02)
        assert layouts == [] and session.state is State.GENERATING
        assert screen.query_one(StatusLine).status == status_before
        assert screen.query_one("#question", Input).value == QUESTION and not drafts(screen)
        gated.release.set()
        await wait_for(pilot, lambda: drafts(screen) and drafts(screen)[0].first_shown_at is not None,
                       "the first text on screen")
        await wait_for(pilot, lambda: "Generating" in screen.query_one(StatusLine).status
                       or session.state is State.DRAFT, "Enter's effects")
        assert screen.query_one("#question", Input).value == ""
        assert [(v.role, v.content) for v in screen.query(MessageView)] == [("user", QUESTION)]
        await wait_for(pilot, lambda: session.state is State.DRAFT, "the draft")


async def test_enter_does_not_reach_the_input(make_session, make_app, tiny_backend, monkeypatch):
    """The screen takes Enter before the input, whose key handler would restart its cursor's blink
    (a repaint as the prefill starts); Enter still sends the question, and typing still reaches it."""
    keys = []
    real_on_key = Input._on_key

    async def recording(self, event):
        keys.append(event.key)
        return await real_on_key(self, event)

    monkeypatch.setattr(Input, "_on_key", recording)
    session = make_session(max_new_tokens=4)
    async with make_app(session).run_test() as pilot:
        await ask(pilot, session, QUESTION)
        assert session.draft.question == QUESTION
        assert "enter" not in keys and len(keys) == len(QUESTION)


async def test_text_typed_during_the_prefill_is_kept(make_session, make_app, tiny_backend):
    """Enter's deferred clearing of the input only clears the question it sent."""
    gated = GatedBackend(tiny_backend, before_first=True)
    session = make_session(backend=gated, max_new_tokens=8)
    async with make_app(session).run_test() as pilot:
        screen = pilot.app.chat
        screen.FEEDBACK_S = 600.0
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        await pilot.press(*QUESTION, "enter")
        await wait_for(pilot, gated.started.is_set, "the prefill")
        await pilot.press(*" and in renal impairment?")
        gated.release.set()
        await wait_for(pilot, lambda: session.state is State.DRAFT, "the draft")
        await pilot.pause()
        assert screen.query_one("#question", Input).value == QUESTION + " and in renal impairment?"
        assert session.turn.question == QUESTION


async def test_the_draft_streams_into_one_markdown_view_without_mounting(make_session, make_app, tiny_backend):
    """The first text and every later piece update the same box (nothing is mounted while the
    answer streams, but the question above it); it shows the whole text so far."""
    gated = GatedBackend(tiny_backend)
    session = make_session(backend=gated, max_new_tokens=12)
    async with make_app(session).run_test() as pilot:
        screen = pilot.app.chat
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        await pilot.pause()
        spare = screen.spare
        widgets_before = list(screen.transcript.walk_children())
        await pilot.press(*QUESTION, "enter")
        await wait_for(pilot, lambda: gated.first_token.is_set() and drafts(screen)
                       and drafts(screen)[0].first_shown_at is not None, "the first text on screen")
        added = [w for w in screen.transcript.walk_children() if w not in widgets_before]
        assert drafts(screen) == [spare] and all(isinstance(w, MessageView) and w.role == "user" for w in added)
        gated.release.set()
        await wait_for(pilot, lambda: session.state is State.DRAFT, "the draft")
        await pilot.pause()
        assert not list(spare.walk_children())
        assert spare.text == session.draft.text and session.draft.text.split()[0] in screen_text(pilot.app)


async def test_the_body_renders_markdown():
    class One(App):
        def compose(self):
            yield DraftView(turn="turn")

    async with One().run_test(size=(60, 10)) as pilot:
        view = pilot.app.query_one(DraftView)
        view.append("**Amoxicillin** 500 mg")
        view.append(" twice daily\n\n- with food")
        await pilot.pause()
        assert view.text == "**Amoxicillin** 500 mg twice daily\n\n- with food"
        lines = [strip.text for strip in view.render_lines(view.content_region.reset_offset)]
        shown = "\n".join(lines)
        assert "Amoxicillin 500 mg twice daily" in shown and "**" not in shown
        assert any(line.strip(" ┃").startswith("•") and "with food" in line for line in lines)


@pytest.mark.parametrize("text", ["Hypertension", "  The usual dose ", "Yes, it’s safe; ask (gently)?", "Émile",
                                  "a  b", "Hypertension 1. is", "**Bold**", "- item", "# Head", "use `x`",
                                  "1. first", "a_b_c", "x\ny", "> quote", "<b>", "a | b", "see [1]", "~~no~~"])
def test_plain_text_looks_as_markdown_renders_it(text):
    """The first word skips the Markdown parser only where the parser would change nothing."""
    def lines(renderable):
        console = Console(width=40, file=io.StringIO(), color_system=None)
        return ["".join(seg.text for seg in line) for line in console.render_lines(Panel(renderable))]

    plain = plain_text(text)
    if plain is not None:
        assert lines(Text(plain)) == lines(Markdown(text))
    assert (plain is None) == any(c in text for c in "1*-#`_\n><|[~"), text


async def test_a_first_text_that_fits_repaints_only_the_draft_box(layouts):
    """The idle box is laid out with one body line: a first word fills it with no screen layout; text
    that needs more lines lays the screen out again."""
    class One(App):
        def compose(self):
            yield DraftView()

    async with One().run_test(size=(80, 10)) as pilot:
        view = pilot.app.query_one(DraftView)
        await pilot.pause()
        assert view.size.height == 3 and IDLE_HINT in screen_text(pilot.app)
        layouts.clear()
        view.show_turn("turn")
        view.append("Hypertension")
        await pilot.pause()
        assert layouts == [] and view.first_shown_at is not None
        text = screen_text(pilot.app)
        assert "Hypertension" in text and "DRAFT" in text and IDLE_HINT not in text
        view.append(" is treated with\n\n- thiazides")
        await pilot.pause()
        assert layouts and view.size.height == 5 and "• thiazides" in screen_text(pilot.app)


async def test_the_chat_shows_a_first_word_without_a_layout(make_session, make_app, tiny_backend, layouts):
    """In the chat itself: from Enter until the first word is on screen, nothing lays the screen out."""
    gated = GatedBackend(Scripted(tiny_backend, "Hypertension is treated with lifestyle changes."))
    session = make_session(backend=gated, max_new_tokens=12)
    async with make_app(session).run_test() as pilot:
        screen = pilot.app.chat
        gated.release.set()
        await ask(pilot, session, QUESTION)  # an exchange in the transcript above the next draft
        await pilot.press("a")
        gated.release.clear()
        await wait_for(pilot, lambda: session.state is State.IDLE, "the approval")
        await pilot.press(*"And for children?")
        await pilot.pause()
        entered = time.perf_counter()
        await pilot.press("enter")
        await wait_for(pilot, lambda: drafts(screen) and drafts(screen)[0].first_shown_at is not None,
                       "the first word on screen")
        shown = drafts(screen)[0].first_shown_at
        assert not [t for t in layouts if entered <= t <= shown]
        assert "Hyp" in screen_text(pilot.app)
        gated.release.set()
        await wait_for(pilot, lambda: session.state is State.DRAFT, "the draft")
        assert session.draft.text == "Hypertension is treated with lifestyle changes."


async def test_each_approved_message_is_one_widget(make_session, make_app):
    """Every layout visits every widget in the transcript: an exchange adds two, however long."""
    session = make_session(max_new_tokens=24)
    async with make_app(session).run_test() as pilot:
        screen = pilot.app.chat
        for question in (QUESTION, "And for children?"):
            await ask(pilot, session, question)
            await pilot.press("a")
            await pilot.pause()
        views = list(screen.query(MessageView))
        assert [v.role for v in views] == ["user", "assistant", "user", "assistant"]
        assert all(not list(v.walk_children()) for v in views)
        assert len(list(screen.transcript.walk_children())) == 4 + 1  # and the idle box


async def test_the_load_and_every_generation_run_on_one_thread(tmp_path, tiny_backend, rules):
    """llama.cpp's OpenMP keeps a thread pool per calling thread; two pools on two cores throttle
    each other. The app's model calls all run on its one worker thread, never on the UI's."""
    threads: list = []

    def load():
        threads.append(threading.get_ident())
        return Recording(tiny_backend, [], threads)

    session = ChatSession(load, rules, AuditLog(tmp_path / "audit.sqlite3"),
                          ConversationStore(tmp_path / "chat.sqlite3"), "You are a careful assistant.",
                          GenerationSettings(max_new_tokens=4), clinician="Dr Test")
    async with build_app(session, export_dir=tmp_path).run_test() as pilot:
        for question in (QUESTION, "And for children?", "And in pregnancy?"):
            await ask(pilot, session, question)
            await pilot.press("g" if question.startswith("And for") else "a")
            await pilot.pause()
            if question.startswith("And for"):
                await wait_for(pilot, lambda: session.state is State.DRAFT, "the regenerated draft")
                await pilot.press("a")
                await pilot.pause()
        # two jobs at once still share the one thread (the default executor would start a second)
        import asyncio
        loop = asyncio.get_running_loop()
        both = await asyncio.gather(*(loop.run_in_executor(None, lambda: (time.sleep(0.05), threading.get_ident())[1])
                                      for _ in range(2)))
    assert len(threads) == 5 and len(set(threads)) == 1 and threads[0] != threading.get_ident()
    assert set(both) == {threads[0]}
