"""A one-line text prompt (rename a conversation, reason for rejecting, export path).

Enter submits a non-empty value; Esc dismisses with ``None``.

Test: ``pytest tests/chat/test_chat_app.py``.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static


class PromptScreen(ModalScreen[str | None]):
    CSS_PATH = "prompt.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, explanation: str = "", value: str = "", placeholder: str = "",
                 empty_error: str = "This cannot be empty."):
        super().__init__()
        self.title_text, self.explanation, self.value = title, explanation, value
        self.placeholder, self.empty_error = placeholder, empty_error

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="title")
            if self.explanation:
                yield Static(self.explanation)
            yield Input(value=self.value, placeholder=self.placeholder, id="value")
            yield Label("Enter to confirm · Esc to go back", id="hint")
            yield Label("", id="error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not value:
            self.query_one("#error", Label).update(self.empty_error)
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
