"""Run ``distillm-edge chat`` from its config: open the store, audit log and rules, start the app.

The red-flag rules load (and are validated) and the databases open before the UI starts, so a
bad file is one clear error line; the model itself loads inside the app, in a worker.

Run: ``distillm-edge chat [--model SPEC] [--backend ...] [--clinician NAME]``.
Test: ``pytest tests/chat/test_chat_e2e_tmux.py`` (drives this in tmux).
"""

from __future__ import annotations

from distillm_edge.chat.config import ChatConfig, default_db_path


def open_chat_backend(model: str, backend: str = "auto", **options):
    """``open_backend``, except that ``auto`` runs an embedded model's shipped GGUF (the chat default)."""
    from distillm_edge.backends import open_backend
    from distillm_edge.models.sources import resolve

    if backend == "auto" and resolve(model).kind == "embedded":
        backend = "gguf"
    return open_backend(model, backend, **options)


def run(cfg: ChatConfig) -> None:
    from distillm_edge.chat.app import build_app
    from distillm_edge.chat.session import ChatSession
    from distillm_edge.chat.store import ConversationStore
    from distillm_edge.models.sources import resolve
    from distillm_edge.safety.audit import AuditLog, default_audit_path
    from distillm_edge.safety.redflags import load_rules

    resolve(cfg.model)  # a bad --model is an error line before the UI starts
    system_prompt = cfg.system_prompt()
    rules = load_rules(None)
    audit = AuditLog(cfg.audit_db or default_audit_path())
    store = ConversationStore(cfg.db or default_db_path())
    session = ChatSession(lambda: open_chat_backend(cfg.model, cfg.backend), rules, audit, store,
                          system_prompt, clinician=cfg.clinician)
    try:
        build_app(session, model_label=cfg.model).run()
    finally:
        session.close()
        store.close()
        audit.close()
