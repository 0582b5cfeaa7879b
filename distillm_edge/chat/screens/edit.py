"""Edit a draft before approving it: a text area with the draft; ctrl+s approves the edited text,
Esc returns to the draft unchanged.

Test: ``pytest tests/chat/test_chat_app.py::test_edit_then_approve``.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, TextArea


class EditScreen(ModalScreen[str | None]):
    CSS_PATH = "edit.tcss"
    BINDINGS = [Binding("ctrl+s", "save", "Approve edit", priority=True), Binding("escape", "cancel", "Back")]

    def __init__(self, draft: str):
        super().__init__()
        self.draft = draft

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Edit the draft · ctrl+s approve the edited answer · Esc back to the draft", id="title")
            yield TextArea(self.draft, id="text", soft_wrap=True)
            yield Label("", id="error")

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()

    def action_save(self) -> None:
        text = self.query_one(TextArea).text.strip()
        if not text:
            self.query_one("#error", Label).update("The answer is empty: write it, or press Esc and reject with r.")
            return
        self.dismiss(text)

    def action_cancel(self) -> None:
        self.dismiss(None)
