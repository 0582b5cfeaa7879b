"""The chat engine without a UI: the supervision state machine, red-flag acknowledgment (also for an
edit that brings a new red flag in), trimming to the context window, quitting with an open draft, and
the prompt at Enter built from the conversation's idle-time tokens (exactly ``chat_ids``).

Run: ``pytest tests/chat/test_chat_session.py``.
"""

from __future__ import annotations

import pytest
from chat_helpers import actions, ask

from distillm_edge.chat.session import AckRequired, SessionError, State
from distillm_edge.chat.widgets.status import StatusLine

RED_FLAG = "She has crushing chest pain radiating to her left arm."


def draft_for(session, question: str):
    turn = session.submit(question)
    for _ in session.stream(turn):
        pass
    return session.complete(turn)


@pytest.fixture()
def session(make_session):
    s = make_session()
    s.load()
    return s


def test_actions_outside_their_state_are_refused(session):
    for act in (session.approve, session.regenerate, lambda: session.reject("x"), lambda: session.edit_approve("x")):
        with pytest.raises(SessionError, match="no draft"):
            act()
    with pytest.raises(SessionError, match="type a question"):
        session.submit("   ")
    draft_for(session, "What is asthma?")
    with pytest.raises(SessionError, match="decide on the draft first"):
        session.submit("another")
    with pytest.raises(SessionError, match="decide on the draft first"):
        session.new_conversation()
    with pytest.raises(SessionError, match="needs a reason"):
        session.reject("  ")
    with pytest.raises(SessionError, match="empty"):
        session.edit_approve(" ")
    assert actions(session) == ["session_start"]  # refused actions log nothing


def test_no_decision_before_the_clinician_is_known(make_session):
    s = make_session(clinician=None)
    s.load()
    assert actions(s) == []  # session_start waits for the name
    with pytest.raises(SessionError, match="identify yourself"):
        s.submit("What is asthma?")
    s.set_clinician("Dr B")
    assert [(r["action"], r["clinician"]) for r in s.audit.rows()] == [("session_start", "Dr B")]


def test_red_flag_blocks_approval_until_acknowledged(session):
    draft = draft_for(session, RED_FLAG)
    assert draft.assessment.requires_ack
    with pytest.raises(AckRequired) as err:
        session.approve()
    assert "cardiac.chest_pain_radiation" in {h.rule_id for h in err.value.hits}
    session.acknowledge()
    session.approve()
    assert actions(session) == ["session_start", "acknowledge_red_flag", "approve"]


def test_an_edit_that_adds_a_red_flag_needs_its_own_acknowledgment(session):
    draft_for(session, "What is a normal resting heart rate?")
    assert not session.pending_red_flags()
    edited = "Normal is 60-100. If he has crushing chest pain radiating to the left arm, call 999."
    with pytest.raises(AckRequired):
        session.edit_approve(edited)
    with pytest.raises(SessionError, match="no red flag"):
        session.acknowledge()  # the unedited draft has nothing to acknowledge
    session.acknowledge(edited)
    session.edit_approve(edited)
    rows = list(session.audit.rows())
    assert [r["action"] for r in rows] == ["session_start", "acknowledge_red_flag", "edit_approve"]
    assert rows[1]["final_text"] == edited
    assert any(h["source"] == "draft" and h["rule_id"] == "cardiac.chest_pain_radiation" for h in rows[2]["red_flags"])


def test_history_is_trimmed_to_the_context_window(session):
    for q in ("First question?", "Second question?"):
        draft_for(session, q)
        session.approve()
    full = len(session.backend.chat_ids([{"role": "system", "content": session.system_prompt}, *session.history,
                                         {"role": "user", "content": "Third?"}]))
    session.n_ctx = full + session.settings.max_new_tokens - 1  # one token short: the oldest exchange goes
    turn = session.submit("Third?")
    assert turn.dropped == 2
    assert [m["content"] for m in turn.messages][1] == "Second question?"
    assert len(turn.prompt_ids) + turn.settings.max_new_tokens <= session.n_ctx
    session.n_ctx = 8  # nothing fits: refused with the reason, not silently cut
    session.cancel()
    for _ in session.stream(turn):
        pass
    session.complete(turn)
    with pytest.raises(SessionError, match="context window"):
        session.submit("Fourth?")


@pytest.mark.anyio
async def test_the_trim_notice_is_on_screen(make_session, make_app, anyio_backend):
    s = make_session()
    async with make_app(s).run_test() as pilot:
        for q in ("First question?", "Second question?"):
            await ask(pilot, s, q)
            await pilot.press("a")
            await pilot.pause()
        s.n_ctx = s.ctx_used + 10  # the next question and the reserved answer no longer fit
        await ask(pilot, s, "Third question?")
        status = pilot.app.chat.query_one(StatusLine)
        assert "History trimmed" in status.notice and f"{s.n_ctx}-token context" in status.notice
        assert s.state is State.DRAFT


def test_quit_logs_an_open_draft(session):
    draft = draft_for(session, "What is asthma?")
    session.abandon()
    rows = list(session.audit.rows())
    assert rows[-1]["action"] == "cancel" and rows[-1]["reason"] == "quit" and rows[-1]["draft"] == draft.text
    session.abandon()  # nothing open: nothing more logged
    assert len(list(session.audit.rows())) == 2


def submit_exact(session, question: str):
    """Submit ``question``: its prompt must be ``chat_ids`` of what is sent, built on the fast path
    from the conversation's idle-time tokens. Returns the turn."""
    turn = session.submit(question)
    assert turn.prompt_ids == session.backend.chat_ids(turn.messages)
    assert session._prompt.last_fast
    assert session.ctx_used == len(turn.prompt_ids)
    return turn


def answer(session, turn, text: str) -> None:
    """Finish ``turn`` and approve ``text`` as its answer (an edit: the tiny model's draft is noise)."""
    for _ in session.stream(turn):
        pass
    session.complete(turn)
    session.edit_approve(text)
    history = [{"role": "system", "content": session.system_prompt}, *session.history]
    assert session.ctx_used == len(session.backend.chat_ids(history, add_generation_prompt=False))


def test_enter_tokenizes_only_the_new_question_and_stays_exact(session):
    answer(session, submit_exact(session, "What is asthma?"), "A chronic airway disease.")  # empty history
    answer(session, submit_exact(session, "And in children?"), "Often allergic.")  # after approve
    first = session.conversation_id
    session.new_conversation()
    answer(session, submit_exact(session, "What is gout?"), "Urate crystal arthritis.")
    session.resume(first)
    turn = submit_exact(session, "Is it curable?")
    assert [m["content"] for m in turn.messages][1:4] == ["What is asthma?", "A chronic airway disease.",
                                                         "And in children?"]
    for _ in session.stream(turn):
        pass
    session.complete(turn)
    session.cancel()
    session.update_settings(session.settings, "You are a terse medical assistant.")
    turn = submit_exact(session, "What is a stroke?")
    assert turn.messages[0]["content"] == "You are a terse medical assistant."
    for _ in session.stream(turn):
        pass
    session.complete(turn)
    session.update_settings(session.settings, "You are a kind medical assistant.")  # with the draft open
    turn = session.regenerate()
    assert turn.messages[0]["content"] == "You are a kind medical assistant."
    assert turn.prompt_ids == session.backend.chat_ids(turn.messages) and session._prompt.last_fast


def test_a_history_changed_behind_the_sessions_back_is_still_exact(session):
    answer(session, submit_exact(session, "What is asthma?"), "A chronic airway disease.")
    session.history[1] = {"role": "assistant", "content": "A chronic disease of the airways."}  # no re-prepare
    turn = session.submit("And in children?")
    assert turn.prompt_ids == session.backend.chat_ids(turn.messages)
    assert not session._prompt.last_fast  # the prepared text no longer matches: the whole text was tokenized
