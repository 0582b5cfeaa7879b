"""Chat test fixtures: a real tiny backend (2-layer random Llama, SmolLM2 tokenizer) behind a real
session, store, audit log and rule set; helpers to drive the app with Textual's pilot.

Helpers the tests import (GatedBackend, wait_for, ask, ...) live in ``chat_helpers.py``: a module
named ``conftest`` is ambiguous when several test folders have one.

Run: ``pytest tests/chat``.
"""

from __future__ import annotations

import pytest

from distillm_edge.backends.generate import GenerationSettings
from distillm_edge.chat.app import build_app
from distillm_edge.chat.session import ChatSession
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
