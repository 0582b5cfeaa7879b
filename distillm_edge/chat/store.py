"""Conversations kept in SQLite: list, resume, rename, delete, export to Markdown.

Only approved text is ever stored here: the clinician's question and the answer they approved (or
edited, then approved), as one exchange. Drafts, rejections and every decision live in the audit
log (``distillm_edge.safety.audit``), not here, so a conversation and its Markdown export are
patient-facing by construction. The database file is created owner-only (0600).

Test: ``pytest tests/chat/test_chat_store.py``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from distillm_edge.errors import UserError
from distillm_edge.io import ensure_dir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    clinician TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
"""
TITLE_CHARS = 60


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    created: float
    updated: float
    n_messages: int = 0


@dataclass(frozen=True)
class StoredMessage:
    role: str  # "user" | "assistant"
    content: str
    clinician: str  # who asked / who approved
    created: float


def title_from(question: str) -> str:
    """A conversation's default title: the first line of its first question, shortened."""
    line = " ".join(question.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


class ConversationStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        ensure_dir(self.path.parent)
        if not self.path.exists():  # create it owner-only before SQLite opens it
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path}: not a usable conversation database ({exc}); "
                            "pass another --db PATH or move this file away.") from None
        self._lock = threading.Lock()

    # --- conversations ---------------------------------------------------------------------------

    def create(self, title: str, conversation_id: str | None = None) -> Conversation:
        now = time.time()
        conv = Conversation(id=conversation_id or uuid.uuid4().hex, title=title.strip() or "Untitled",
                            created=now, updated=now)
        with self._lock:
            self._db.execute("INSERT INTO conversations VALUES (?, ?, ?, ?)",
                             (conv.id, conv.title, conv.created, conv.updated))
        return conv

    def list(self) -> list[Conversation]:
        """All conversations, most recently updated first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT c.id, c.title, c.created, c.updated, COUNT(m.id) FROM conversations c "
                "LEFT JOIN messages m ON m.conversation_id = c.id GROUP BY c.id "
                "ORDER BY c.updated DESC, c.rowid DESC").fetchall()
        return [Conversation(*row) for row in rows]

    def get(self, conversation_id: str) -> Conversation:
        with self._lock:
            row = self._db.execute(
                "SELECT c.id, c.title, c.created, c.updated, COUNT(m.id) FROM conversations c "
                "LEFT JOIN messages m ON m.conversation_id = c.id WHERE c.id = ? GROUP BY c.id",
                (conversation_id,)).fetchone()
        if row is None:
            raise UserError(f"{self.path}: no conversation with id {conversation_id}.")
        return Conversation(*row)

    def rename(self, conversation_id: str, title: str) -> Conversation:
        title = " ".join(title.split())
        if not title:
            raise UserError("a conversation title cannot be empty; type a title.")
        self.get(conversation_id)
        with self._lock:
            self._db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))
        return self.get(conversation_id)

    def delete(self, conversation_id: str) -> None:
        self.get(conversation_id)
        with self._lock:
            self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # --- messages --------------------------------------------------------------------------------

    def add_exchange(self, conversation_id: str, question: str, answer: str, clinician: str) -> None:
        """Append one approved exchange (question, approved answer) atomically."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO messages (conversation_id, role, content, clinician, created) VALUES (?, ?, ?, ?, ?)",
                    [(conversation_id, "user", question, clinician, now),
                     (conversation_id, "assistant", answer, clinician, now)])
                self._db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def messages(self, conversation_id: str) -> list[StoredMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT role, content, clinician, created FROM messages WHERE conversation_id = ? ORDER BY id",
                (conversation_id,)).fetchall()
        return [StoredMessage(*row) for row in rows]

    # --- export ----------------------------------------------------------------------------------

    def export_markdown(self, conversation_id: str) -> str:
        """The conversation as Markdown: approved exchanges only, each answer with who approved it."""
        conv = self.get(conversation_id)
        day = time.strftime("%Y-%m-%d %H:%M", time.localtime(conv.updated))
        lines = [f"# {conv.title}", "",
                 f"_Exported from distillm-edge chat · last updated {day} · every answer below was "
                 "reviewed and approved by the named clinician._", ""]
        for msg in self.messages(conversation_id):
            if msg.role == "user":
                lines += ["## Question", "", msg.content.strip(), ""]
            else:
                lines += [f"## Answer (approved by {msg.clinician})", "", msg.content.strip(), ""]
        return "\n".join(lines).rstrip() + "\n"

    def close(self) -> None:
        with self._lock:
            self._db.close()
