"""Messages the chat workers post to the UI thread (dataclasses; Textual delivers them in order).

The load worker posts :class:`ModelLoaded` or :class:`ModelLoadFailed`; the generation worker posts
one :class:`DraftDelta` per visible text piece and then :class:`GenerationDone` (or
:class:`GenerationFailed`). Tests capture them with ``App.run_test(message_hook=...)``.

Test: ``pytest tests/chat/test_chat_app.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from distillm_edge.chat.session import Turn


@dataclass
class ModelLoaded(Message):
    load_seconds: float


@dataclass
class ModelLoadFailed(Message):
    error: str


@dataclass
class DraftDelta(Message):
    turn: Turn
    text: str


@dataclass
class GenerationDone(Message):
    turn: Turn


@dataclass
class GenerationFailed(Message):
    turn: Turn
    error: str
