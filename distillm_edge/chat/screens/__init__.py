"""The chat's screens, one per file, each with its own ``.tcss`` beside it.

Test: ``pytest tests/chat``.
"""
