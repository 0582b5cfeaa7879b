"""``distillm-edge chat``: a clinician-supervised terminal chat (Textual) over any backend.

- ``config.py``   the frozen ChatConfig the CLI builds;
- ``store.py``    conversations in SQLite (approved text only), Markdown export;
- ``session.py``  the engine: backend, supervision state machine, red-flag gate, audit events;
- ``messages.py`` the dataclass messages the workers post;
- ``app.py``      the Textual App and its factory ``build_app(session)``; ``run.py`` runs it;
- ``widgets/``    one widget per file; ``screens/`` one screen per file, each with its ``.tcss``.

Run: ``distillm-edge chat`` (embedded SmolLM2 GGUF). Test: ``pytest tests/chat``.
"""
