"""Conversation store: owner-only file, approved exchanges, list/rename/delete, Markdown export.

Run: ``pytest tests/chat/test_chat_store.py``.
"""

from __future__ import annotations

import stat

import pytest

from distillm_edge.chat.store import ConversationStore, title_from
from distillm_edge.errors import UserError


@pytest.fixture()
def store(tmp_path):
    s = ConversationStore(tmp_path / "state" / "chat.sqlite3")
    yield s
    s.close()


def test_database_is_owner_only(store):
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_exchanges_list_rename_delete(store):
    a = store.create("first")
    b = store.create("second", conversation_id="b" * 32)
    store.add_exchange(a.id, "What is the dose?", "500 mg twice daily.", "Dr A")
    listed = store.list()
    assert [c.id for c in listed] == [a.id, b.id]  # most recently updated first
    assert listed[0].n_messages == 2 and listed[1].n_messages == 0
    assert [(m.role, m.content, m.clinician) for m in store.messages(a.id)] == [
        ("user", "What is the dose?", "Dr A"), ("assistant", "500 mg twice daily.", "Dr A")]
    assert store.rename(b.id, "  renamed   title ").title == "renamed title"
    with pytest.raises(UserError, match="cannot be empty"):
        store.rename(b.id, "   ")
    store.delete(a.id)
    assert [c.id for c in store.list()] == [b.id]
    assert store.messages(a.id) == []  # messages go with their conversation
    with pytest.raises(UserError, match="no conversation"):
        store.get(a.id)


def test_markdown_export_has_only_the_exchanges(store):
    conv = store.create("Dosing")
    store.add_exchange(conv.id, "Dose of amoxicillin?", "**500 mg** every 8 hours.", "Dr A")
    text = store.export_markdown(conv.id)
    assert text.startswith("# Dosing\n")
    assert "## Question\n\nDose of amoxicillin?" in text
    assert "## Answer (approved by Dr A)\n\n**500 mg** every 8 hours." in text


def test_reopen_keeps_data_and_rejects_garbage(tmp_path):
    path = tmp_path / "chat.sqlite3"
    s = ConversationStore(path)
    conv = s.create("kept")
    s.close()
    again = ConversationStore(path)
    assert again.get(conv.id).title == "kept"
    again.close()
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(UserError, match="bad.sqlite3"):
        ConversationStore(bad)


def test_title_from_first_line():
    assert title_from("  chest\npain?  ") == "chest pain?"
    assert len(title_from("x" * 200)) == 60
