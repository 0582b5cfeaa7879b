"""Conversations through the app: switching, resuming (the resumed history reaches the prompt),
renaming, deleting and exporting to Markdown (approved text only; rejected drafts never appear).

Run: ``pytest tests/chat/test_chat_conversations.py``.
"""

from __future__ import annotations

import stat

import pytest
from chat_helpers import actions, ask
from textual.widgets import Input, OptionList

from distillm_edge.chat.screens.confirm import ConfirmScreen
from distillm_edge.chat.screens.conversations import ConversationsScreen
from distillm_edge.chat.screens.prompt import PromptScreen
from distillm_edge.chat.session import State
from distillm_edge.chat.widgets.message import MessageView

pytestmark = pytest.mark.anyio


async def _open_list(pilot) -> ConversationsScreen:
    await pilot.press("ctrl+l")
    await pilot.pause()
    assert isinstance(pilot.app.screen, ConversationsScreen)
    return pilot.app.screen


def _titles(screen: ConversationsScreen) -> list[str]:
    options = screen.query_one(OptionList)
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


async def test_switch_and_resume(make_session, make_app):
    session = make_session()
    async with make_app(session).run_test() as pilot:
        await ask(pilot, session, "First question about asthma")
        await pilot.press("a")
        first_id, first_answer = session.conversation_id, session.history[-1]["content"]
        await pilot.pause()
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert not pilot.app.chat.query(MessageView) and session.conversation_id != first_id
        await ask(pilot, session, "Second question about gout")
        await pilot.press("a")
        await pilot.pause()
        second_id = session.conversation_id

        screen = await _open_list(pilot)
        titles = _titles(screen)
        assert titles[0].startswith("Second question about gout (open)")  # newest first
        assert titles[1].startswith("First question about asthma")
        await pilot.press("down", "enter")  # resume the first
        await pilot.pause()
        assert pilot.app.screen is pilot.app.chat
        assert session.conversation_id == first_id
        shown = [(v.role, v.content) for v in pilot.app.chat.query(MessageView)]
        assert shown == [("user", "First question about asthma"), ("assistant", first_answer)]

        await ask(pilot, session, "And in children?")  # the resumed history is in the prompt
        sent = [m["content"] for m in session.turn.messages]
        assert sent[1:] == ["First question about asthma", first_answer, "And in children?"]
        await pilot.press("a")
        await pilot.pause()
    assert [m.content for m in session.store.messages(first_id)][-2] == "And in children?"
    assert len(session.store.messages(second_id)) == 2
    assert actions(session) == ["session_start", "approve", "approve", "approve"]


async def test_rename_delete_and_export(make_session, make_app, tmp_path):
    session = make_session()
    async with make_app(session).run_test() as pilot:
        await ask(pilot, session, "Dose of paracetamol?")
        approved = session.draft.text
        await pilot.press("a")
        await pilot.pause()
        await ask(pilot, session, "And for a child?")
        rejected = session.draft.text
        await pilot.press("r")
        await pilot.pause()
        await pilot.press(*"made up dose", "enter")
        await pilot.pause()
        conv_id = session.conversation_id

        screen = await _open_list(pilot)
        await pilot.press("m")  # rename
        await pilot.pause()
        assert isinstance(pilot.app.screen, PromptScreen)
        pilot.app.screen.query_one(Input).value = ""
        await pilot.press(*"Paracetamol dosing", "enter")
        await pilot.pause()
        assert session.store.get(conv_id).title == "Paracetamol dosing"
        assert _titles(screen)[0].startswith("Paracetamol dosing")

        await pilot.press("x")  # export
        await pilot.pause()
        prompt = pilot.app.screen
        assert isinstance(prompt, PromptScreen)
        assert prompt.query_one(Input).value.endswith(f"paracetamol-dosing-{conv_id[:8]}.md")
        out = tmp_path / "out" / "visit.md"
        prompt.query_one(Input).value = str(out)
        await pilot.press("enter")
        await pilot.pause()
        text = out.read_text()
        assert text.startswith("# Paracetamol dosing")
        assert "Dose of paracetamol?" in text and approved.strip() in text
        assert "And for a child?" not in text  # a rejected exchange is not part of the conversation
        if rejected.strip() not in approved:
            assert rejected.strip() not in text
        assert stat.S_IMODE(out.stat().st_mode) == 0o640

        await pilot.press("d")  # delete, after confirming
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert len(session.store.list()) == 1
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert session.store.list() == []
        await pilot.press("escape")  # back: the open conversation was deleted, so a new one starts
        await pilot.pause()
        assert pilot.app.screen is pilot.app.chat and session.state is State.IDLE
        assert session.conversation_id != conv_id and not pilot.app.chat.query(MessageView)
    assert [r["action"] for r in session.audit.rows()] == ["session_start", "approve", "reject"]


async def test_export_key_in_chat(make_session, make_app, tmp_path):
    session = make_session()
    async with make_app(session).run_test() as pilot:
        await ask(pilot, session, "Dose of ibuprofen?")
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("ctrl+x")
        await pilot.pause()
        prompt = pilot.app.screen
        assert isinstance(prompt, PromptScreen)
        default = prompt.query_one(Input).value
        assert default.startswith(str(tmp_path / "exports"))
        await pilot.press("enter")
        await pilot.pause()
    text = open(default).read()
    assert "Dose of ibuprofen?" in text and "approved by Dr Test" in text
