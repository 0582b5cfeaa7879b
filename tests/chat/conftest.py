"""Chat test fixtures: a real tiny backend (2-layer random Llama, SmolLM2 tokenizer) behind a real
session, store, audit log and rule set; helpers to drive the app with Textual's pilot.

``gated`` wraps that backend so a test controls the stream: after the first token it waits until
``release`` is set (used to press Esc mid-stream).

Run: ``pytest tests/chat``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from distillm_edge.backends.generate import GenerationSettings
from distillm_edge.chat.app import build_app
from distillm_edge.chat.session import ChatSession, State
from distillm_edge.chat.store import ConversationStore
from distillm_edge.safety.audit import AuditLog
from distillm_edge.safety.redflags import load_rules

SYSTEM = "You are a careful medical assistant."


@pytest.fixture()
def anyio_backend():
    return "asyncio"  # the async tests (pytest.mark.anyio) run on asyncio, as Textual does


@pytest.fixture(scope="session")
def tiny_backend(tiny_llama_dir):
    from distillm_edge.backends.torch_backend import TorchBackend

    backend = TorchBackend(str(tiny_llama_dir), threads=1)
    backend.close = lambda: None  # shared by the tests: the sessions must not close it
    return backend


@pytest.fixture(scope="session")
def rules():
    return load_rules()


class GatedBackend:
    """The real backend, with a stream that pauses after its first token until ``release`` is set."""

    def __init__(self, backend):
        self._backend = backend
        self.release = threading.Event()
        self.first_token = threading.Event()

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def stream(self, ids, max_new_tokens, **kwargs):
        for i, token in enumerate(self._backend.stream(ids, max_new_tokens, **kwargs)):
            yield token
            if i == 0:
                self.first_token.set()
                self.release.wait(timeout=60)


@pytest.fixture()
def make_session(tmp_path, tiny_backend, rules):
    made = []

    def make(clinician: str | None = "Dr Test", backend=None, max_new_tokens: int = 8) -> ChatSession:
        session = ChatSession(lambda: backend or tiny_backend, rules, AuditLog(tmp_path / "audit.sqlite3"),
                              ConversationStore(tmp_path / "chat.sqlite3"), SYSTEM,
                              GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.7, seed=0),
                              clinician=clinician)
        made.append(session)
        return session

    yield make
    for session in made:
        session.store.close()
        session.audit.close()


@pytest.fixture()
def make_app(tmp_path):
    def make(session: ChatSession):
        return build_app(session, model_label="tiny_llama0", export_dir=tmp_path / "exports")

    return make


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


def actions(session: ChatSession) -> list[str]:
    return [row["action"] for row in session.audit.rows()]


def exports_dir(tmp_path: Path) -> Path:
    return tmp_path / "exports"
