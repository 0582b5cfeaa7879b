"""The chat's widgets, one per file: header, message, draft, red-flag banner, status line.

Test: ``pytest tests/chat``.
"""
