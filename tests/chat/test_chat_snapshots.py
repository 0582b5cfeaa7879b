"""Snapshots of the chat at 80x24 (pytest-textual-snapshot): a red-flagged draft (dark theme), the
help screen (light theme) and the clinician prompt. The model is loaded before the app starts and
the tiny model's sampling is seeded, so every frame is deterministic.

Run: ``pytest tests/chat/test_chat_snapshots.py`` (update: ``--snapshot-update``, then review the
SVGs under ``tests/chat/__snapshots__``).
"""

from __future__ import annotations

from chat_helpers import ask

from distillm_edge.chat.app import build_app

SIZE = (80, 24)


def _app(make_session, tmp_path, clinician="Dr Test", theme="dark"):
    session = make_session(clinician=clinician)
    session.load()
    return build_app(session, model_label="tiny_llama0", export_dir=tmp_path, theme=theme)


def test_red_flag_draft(snap_compare, make_session, tmp_path):
    async def run_before(pilot):
        await ask(pilot, pilot.app.session, "Crushing chest pain radiating to the left arm, sweating")

    assert snap_compare(_app(make_session, tmp_path), run_before=run_before, terminal_size=SIZE)


def test_help_light_theme(snap_compare, make_session, tmp_path):
    assert snap_compare(_app(make_session, tmp_path, theme="light"), press=["question_mark"], terminal_size=SIZE)


def test_clinician_prompt(snap_compare, make_session, tmp_path):
    assert snap_compare(_app(make_session, tmp_path, clinician=None), press=[*"Dr"], terminal_size=SIZE)
