"""The supervision flows, driven through the real app with Textual's pilot on a real tiny model.

Each test asserts on what the workers posted (``message_hook``), on the conversation store (only
approved text) and on the audit log (one event per decision, with the clinician).

Run: ``pytest tests/chat/test_chat_app.py``.
"""

from __future__ import annotations

import stat

import pytest
from chat_helpers import GatedBackend, actions, ask, drafts, posted_of, wait_for
from textual.widgets import Input, Static, TextArea

from distillm_edge.chat.messages import DraftDelta, GenerationDone, ModelLoaded
from distillm_edge.chat.screens.ack import AckScreen
from distillm_edge.chat.screens.clinician import ClinicianScreen
from distillm_edge.chat.screens.edit import EditScreen
from distillm_edge.chat.screens.help import HelpScreen
from distillm_edge.chat.screens.prompt import PromptScreen
from distillm_edge.chat.screens.settings import SettingsScreen
from distillm_edge.chat.session import State
from distillm_edge.chat.widgets.banner import RedFlagBanner
from distillm_edge.chat.widgets.header import NOTICE, ChatHeader
from distillm_edge.chat.widgets.message import MessageView

pytestmark = pytest.mark.anyio
QUESTION = "What is the usual adult dose of amoxicillin?"
RED_FLAG_QUESTION = "I have crushing chest pain radiating to my left arm and I am sweating"


def _audit(session, action):
    return [row for row in session.audit.rows() if row["action"] == action]


async def test_approve(make_session, make_app):
    session = make_session()
    posted = []
    async with make_app(session).run_test(message_hook=posted.append) as pilot:
        await ask(pilot, session, QUESTION)
        draft_text = session.draft.text
        deltas = posted_of(posted, DraftDelta)
        assert len(posted_of(posted, ModelLoaded)) == 1
        assert deltas and "".join(d.text for d in deltas) == draft_text
        done = posted_of(posted, GenerationDone)
        assert len(done) == 1 and posted.index(done[0]) > posted.index(deltas[-1])  # done after the last delta
        screen = pilot.app.chat
        assert drafts(screen)[0].text == draft_text
        header = screen.query_one(ChatHeader).render_text().plain
        assert NOTICE in header and "tiny_llama0" in header and "torch float32" in header and "/512" in header

        await pilot.press("a")
        await pilot.pause()
        assert session.state is State.IDLE and not drafts(screen)
        views = screen.query(MessageView)
        assert [(v.role, v.content) for v in views] == [("user", QUESTION), ("assistant", draft_text)]
    conv = session.store.list()
    assert len(conv) == 1 and conv[0].title == QUESTION
    assert [(m.role, m.content) for m in session.store.messages(conv[0].id)] == [
        ("user", QUESTION), ("assistant", draft_text)]
    assert actions(session) == ["session_start", "approve"]
    event = _audit(session, "approve")[0]
    assert event["clinician"] == "Dr Test" and event["prompt"] == QUESTION
    assert event["draft"] == event["final_text"] == draft_text
    assert event["model_sha256"] and event["conversation_id"] == conv[0].id
    assert event["settings"]["max_new_tokens"] == 8 and event["settings"]["system_prompt"]
    assert session.audit.verify().ok
    assert stat.S_IMODE(session.audit.path.stat().st_mode) == 0o600


async def test_edit_then_approve(make_session, make_app):
    session = make_session()
    async with make_app(session).run_test() as pilot:
        await ask(pilot, session, QUESTION)
        draft_text = session.draft.text
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(pilot.app.screen, EditScreen)
        assert pilot.app.screen.query_one(TextArea).text == draft_text
        await pilot.press(*"Edited: ", "ctrl+s")
        await pilot.pause()
        assert session.state is State.IDLE
    edited = ("Edited: " + draft_text).strip()
    conv = session.store.list()[0]
    assert session.store.messages(conv.id)[1].content == edited
    assert actions(session) == ["session_start", "edit_approve"]
    event = _audit(session, "edit_approve")[0]
    assert event["draft"] == draft_text and event["final_text"] == edited


async def test_reject_needs_a_reason_and_stores_nothing(make_session, make_app):
    session = make_session()
    async with make_app(session).run_test() as pilot:
        await ask(pilot, session, QUESTION)
        draft_text = session.draft.text
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(pilot.app.screen, PromptScreen)
        await pilot.press("enter")  # an empty reason is refused
        await pilot.pause()
        assert isinstance(pilot.app.screen, PromptScreen) and session.state is State.DRAFT
        await pilot.press(*"wrong drug class", "enter")
        await pilot.pause()
        assert session.state is State.IDLE
        assert pilot.app.chat.query_one("#question", Input).value == QUESTION  # back to rephrase
        assert not pilot.app.chat.query(MessageView)
    assert session.store.list() == []
    assert actions(session) == ["session_start", "reject"]
    event = _audit(session, "reject")[0]
    assert event["reason"] == "wrong drug class" and event["draft"] == draft_text and event["final_text"] is None


async def test_regenerate_logs_the_discarded_draft(make_session, make_app):
    session = make_session()
    posted = []
    async with make_app(session).run_test(message_hook=posted.append) as pilot:
        await ask(pilot, session, QUESTION)
        first = session.draft.text
        await pilot.press("g")
        await wait_for(pilot, lambda: session.state is State.DRAFT, "the regenerated draft")
        await pilot.pause()
        second = session.draft.text
        assert len(drafts(pilot.app.chat)) == 1
        assert drafts(pilot.app.chat)[0].text == second
        await pilot.press("a")
        await pilot.pause()
    assert len(posted_of(posted, GenerationDone)) == 2
    assert actions(session) == ["session_start", "regenerate", "approve"]
    regen, approve = _audit(session, "regenerate")[0], _audit(session, "approve")[0]
    assert regen["draft"] == first and regen["final_text"] is None
    assert approve["final_text"] == second
    assert approve["settings"]["seed"] == regen["settings"]["seed"] + 1  # another sample
    conv = session.store.list()[0]
    assert [m.content for m in session.store.messages(conv.id)] == [QUESTION, second]


async def test_cancel_mid_stream(make_session, make_app, tiny_backend):
    gated = GatedBackend(tiny_backend)
    session = make_session(backend=gated, max_new_tokens=16)
    posted = []
    async with make_app(session).run_test(message_hook=posted.append) as pilot:
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        await pilot.press(*QUESTION, "enter")
        await wait_for(pilot, lambda: any(isinstance(m, DraftDelta) for m in posted), "the first delta")
        await pilot.pause()
        assert session.state is State.GENERATING
        await pilot.press("escape")
        await pilot.pause()
        assert "Cancelling" in pilot.app.chat.query_one("#status").status
        gated.release.set()
        await wait_for(pilot, lambda: session.state is State.IDLE, "the cancellation")
        await pilot.pause()
        screen = pilot.app.chat
        assert not drafts(screen) and not screen.query(MessageView)
        assert screen.query_one("#question", Input).value == QUESTION
    turn = posted_of(posted, GenerationDone)[0].turn
    assert turn.result.finish_reason == "cancelled" and turn.result.completion_tokens < 16
    assert session.store.list() == []
    assert actions(session) == ["session_start", "cancel"]
    event = _audit(session, "cancel")[0]
    assert event["draft"] == turn.result.text and event["final_text"] is None


async def test_a_long_prefill_shows_generating_and_esc_cancels_it(make_session, make_app, tiny_backend):
    """A model slower than ``FEEDBACK_S`` to its first token: the status line says it is generating
    and the input is cleared meanwhile (no draft box yet); Esc still cancels, and the question goes
    back to the input."""
    gated = GatedBackend(tiny_backend, before_first=True)
    session = make_session(backend=gated, max_new_tokens=16)
    posted = []
    async with make_app(session).run_test(message_hook=posted.append) as pilot:
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        screen = pilot.app.chat
        await pilot.press(*QUESTION, "enter")
        await wait_for(pilot, gated.started.is_set, "the generation to start")
        await wait_for(pilot, lambda: "Generating" in screen.query_one("#status").status, "the generating status")
        assert session.state is State.GENERATING and not gated.release.is_set()
        assert screen.query_one("#question", Input).value == ""
        assert not drafts(screen) and not screen.query(MessageView)
        await pilot.press("escape")
        await pilot.pause()
        assert "Cancelling" in screen.query_one("#status").status
        gated.release.set()
        await wait_for(pilot, lambda: session.state is State.IDLE, "the cancellation")
        await pilot.pause()
        assert not drafts(screen) and not screen.query(MessageView)
        assert screen.query_one("#question", Input).value == QUESTION
        assert not screen.query_one("#question", Input).disabled
    assert posted_of(posted, GenerationDone)[0].turn.result.finish_reason == "cancelled"
    assert actions(session) == ["session_start", "cancel"]


async def test_first_text_brings_the_draft_box_and_the_draft_takes_the_keys(make_session, make_app, tiny_backend):
    """The first text brings the draft box, the question above it in the next frame; the complete draft
    takes the keys from the input (a/e/r/g decide on it)."""
    gated = GatedBackend(tiny_backend)
    session = make_session(backend=gated, max_new_tokens=16)
    async with make_app(session).run_test() as pilot:
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        await pilot.press(*QUESTION, "enter")
        await wait_for(pilot, lambda: drafts(pilot.app.chat) and drafts(
            pilot.app.chat)[0].first_shown_at is not None, "the first text on screen")
        await pilot.pause()
        screen = pilot.app.chat
        assert session.state is State.GENERATING and screen.first_shown.is_set()
        assert [(v.role, v.content) for v in screen.query(MessageView)] == [("user", QUESTION)]
        assert drafts(screen)[0].text
        kids = list(screen.transcript.children)  # the question follows the first paint, but above the draft
        assert kids.index(screen.pending) == kids.index(drafts(screen)[0]) - 1
        gated.release.set()
        await wait_for(pilot, lambda: session.state is State.DRAFT, "the draft")
        await pilot.pause()
        assert screen.query_one("#question", Input).disabled
        assert pilot.app.focused is screen.transcript  # letters are decision keys now, not text


async def test_an_empty_draft_still_gets_its_box_and_keys(make_session, make_app, tiny_backend):
    """A model that ends its turn at once streams no text: the draft box comes with the end."""

    class EndsAtOnce:
        def __getattr__(self, name):
            return getattr(tiny_backend, name)

        def stream(self, ids, max_new_tokens, **kwargs):
            yield min(tiny_backend.eos_token_ids)

    session = make_session(backend=EndsAtOnce())
    posted = []
    async with make_app(session).run_test(message_hook=posted.append) as pilot:
        await ask(pilot, session, QUESTION)
        screen = pilot.app.chat
        assert not posted_of(posted, DraftDelta) and session.draft.text == ""
        assert drafts(screen)[0].text == "" and screen.query_one("#question", Input).disabled
        assert [(v.role, v.content) for v in screen.query(MessageView)] == [("user", QUESTION)]
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(pilot.app.screen, PromptScreen)


async def test_escape_on_a_finished_draft_cancels_it(make_session, make_app):
    session = make_session()
    async with make_app(session).run_test() as pilot:
        await ask(pilot, session, QUESTION)
        draft_text = session.draft.text
        await pilot.press("escape")
        await pilot.pause()
        assert session.state is State.IDLE
    assert actions(session) == ["session_start", "cancel"]
    assert _audit(session, "cancel")[0]["draft"] == draft_text
    assert session.store.list() == []


async def test_red_flag_needs_acknowledgment(make_session, make_app):
    session = make_session()
    async with make_app(session).run_test() as pilot:
        await ask(pilot, session, RED_FLAG_QUESTION)
        banner = pilot.app.chat.query_one(RedFlagBanner)
        assert banner.display and "cardiac.chest_pain_radiation" in {h.rule_id for h in banner.hits}
        assert "cardiac.chest_pain_radiation" in banner.render_text().plain
        await pilot.press("a")  # one key cannot approve: the acknowledgment screen opens
        await pilot.pause()
        assert isinstance(pilot.app.screen, AckScreen) and session.state is State.DRAFT
        assert actions(session) == ["session_start"]
        await pilot.press("escape")  # backing out approves nothing
        await pilot.pause()
        assert session.state is State.DRAFT and actions(session) == ["session_start"]
        await pilot.press("a")
        await pilot.pause()
        await pilot.press(*"yes", "enter")  # only the confirmation word counts
        await pilot.pause()
        assert isinstance(pilot.app.screen, AckScreen) and actions(session) == ["session_start"]
        pilot.app.screen.query_one(Input).value = ""
        await pilot.press(*"ack", "enter")
        await pilot.pause()
        assert session.state is State.IDLE
    assert actions(session) == ["session_start", "acknowledge_red_flag", "approve"]
    ack = _audit(session, "acknowledge_red_flag")[0]
    assert ack["clinician"] == "Dr Test"
    assert any(h["rule_id"] == "cardiac.chest_pain_radiation" and h["suppressed"] is None for h in ack["red_flags"])
    assert len(session.store.list()) == 1


async def test_banner_and_ack_screen_describe_red_flags_alike(make_session, make_app):
    """One description of a hit: the banner's rule lines and the acknowledgment screen's list are
    the same text (each rule once: severity, title, rule id, matched words and where, advice)."""
    session = make_session()
    question = RED_FLAG_QUESTION + "; crushing chest pain again"  # the same rule matches twice
    async with make_app(session).run_test() as pilot:
        await ask(pilot, session, question)
        banner = pilot.app.chat.query_one(RedFlagBanner)
        rule_lines = banner.render_text().plain.splitlines()[1:]  # the first line is the decision
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(pilot.app.screen, AckScreen)
        listed = str(pilot.app.screen.query_one("#hits", Static).content)
        assert listed.splitlines() == rule_lines
        assert sum("cardiac.chest_pain_radiation" in line for line in rule_lines) == 1


async def test_clinician_prompt_when_not_given(make_session, make_app):
    session = make_session(clinician=None)
    async with make_app(session).run_test() as pilot:
        await pilot.pause()
        assert isinstance(pilot.app.screen, ClinicianScreen)
        await pilot.press("enter")  # an empty name is refused
        await pilot.pause()
        assert isinstance(pilot.app.screen, ClinicianScreen)
        await pilot.press(*"RN 4521", "enter")
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        await pilot.pause()
        assert session.clinician == "RN 4521"
        assert "RN 4521" in pilot.app.chat.query_one(ChatHeader).render_text().plain
    rows = list(session.audit.rows())
    assert [(r["action"], r["clinician"]) for r in rows] == [("session_start", "RN 4521")]


async def test_settings_screen(make_session, make_app):
    session = make_session()
    async with make_app(session).run_test() as pilot:
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        await pilot.press("ctrl+o")
        await pilot.pause()
        screen = pilot.app.screen
        assert isinstance(screen, SettingsScreen)
        screen.query_one("#top_p", Input).value = "2"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert pilot.app.screen is screen and "top_p" in str(screen.query_one("#error").render())
        screen.query_one("#top_p", Input).value = "0.5"
        screen.query_one("#max_new_tokens", Input).value = "5"
        screen.query_one("#temperature", Input).value = "0"
        screen.query_one("#system_prompt", TextArea).text = "Answer in one sentence."
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert pilot.app.screen is pilot.app.chat
    assert (session.settings.top_p, session.settings.max_new_tokens, session.settings.temperature) == (0.5, 5, 0.0)
    assert session.system_prompt == "Answer in one sentence."


async def test_help_opens_from_an_empty_input_only(make_session, make_app):
    session = make_session()
    async with make_app(session).run_test() as pilot:
        await wait_for(pilot, lambda: session.state is State.IDLE, "the model to load")
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(pilot.app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press(*"why", "question_mark")  # a question mark inside a question is just text
        await pilot.pause()
        assert pilot.app.screen is pilot.app.chat
        assert pilot.app.chat.query_one("#question", Input).value == "why?"


async def test_quit_with_an_open_draft_logs_it(make_session, make_app):
    session = make_session()
    async with make_app(session).run_test() as pilot:
        await ask(pilot, session, QUESTION)
        await pilot.press("ctrl+q")
        await pilot.pause()
    rows = list(session.audit.rows())
    assert [r["action"] for r in rows] == ["session_start", "cancel"] and rows[-1]["reason"] == "quit"


async def test_a_model_that_fails_to_load_is_reported(make_session, make_app, tmp_path):
    from distillm_edge.chat.widgets.status import StatusLine
    from distillm_edge.errors import UserError

    def broken():
        raise UserError(f"{tmp_path}/missing.gguf: llama.cpp could not load this GGUF file")

    session = make_session()
    session._loader = broken
    async with make_app(session).run_test() as pilot:
        await wait_for(pilot, lambda: "Could not load" in pilot.app.chat.query_one(StatusLine).status, "the error")
        assert "missing.gguf" in pilot.app.chat.query_one(StatusLine).status
        assert pilot.app.chat.query_one("#question", Input).disabled
    assert actions(session) == []  # no model, no session_start
