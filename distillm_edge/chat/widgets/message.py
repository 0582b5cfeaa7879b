"""One approved exchange part in the transcript: the clinician's question, or an approved answer
(rendered as Markdown, labelled with who approved it).

Test: ``pytest tests/chat/test_chat_app.py``.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Markdown, Static


class MessageView(Vertical):
    DEFAULT_CSS = """
    MessageView { height: auto; margin: 0 0 1 0; }
    MessageView .label { color: $text-muted; text-style: bold; }
    MessageView.user .label { color: $accent; }
    MessageView.assistant .label { color: $success; }
    MessageView Markdown { margin: 0; padding: 0 1; }
    MessageView Static { padding: 0 1; }
    """

    def __init__(self, role: str, content: str, clinician: str = ""):
        super().__init__(classes=role)
        self.role, self.content, self.clinician = role, content, clinician

    def compose(self) -> ComposeResult:
        if self.role == "user":
            yield Label("Question", classes="label")
            yield Static(self.content, markup=False)
        else:
            who = f" · approved by {self.clinician}" if self.clinician else " · approved"
            yield Label(f"Answer{who}", classes="label")
            yield Markdown(self.content)
