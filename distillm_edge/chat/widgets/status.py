"""The status line above the input: what the app is doing (loading, generating, waiting for a
decision) and any notice, e.g. that the history was trimmed to the context window.

Test: ``pytest tests/chat/test_chat_app.py``.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    StatusLine.busy { color: $warning; }
    StatusLine.error { color: $error; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.status = ""
        self.notice = ""
        self._one_line = False  # the text shown is one line that fits (its height is 1)

    def show(self, status: str | None = None, notice: str | None = None, kind: str = "") -> None:
        """Set the status text (and optionally the notice); ``kind`` is "", "busy" or "error"."""
        if status is not None:
            self.status = status
        if notice is not None:
            self.notice = notice
        for name in ("busy", "error"):
            self.set_class(kind == name, name)
        text = Text(self.status)
        if self.notice:
            text.append(f"\n{self.notice}", style="bold")
        # A layout of the whole screen costs ~1.5 ms of UI CPU, and Enter changes the status while
        # the model's prefill needs the cores: one line that fits before and after keeps the height.
        one_line = "\n" not in text.plain and text.cell_len <= self.content_size.width
        self.update(text, layout=not (one_line and self._one_line))
        self._one_line = one_line
