"""Asks the clinician to identify themself (name or staff ID) before anything is decided.

Shown at start when ``--clinician`` is absent; Enter with a non-empty name dismisses it with the
name, which the session records with every decision. There is no way around it but quitting.

Test: ``pytest tests/chat/test_chat_app.py::test_clinician_prompt``.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static


class ClinicianScreen(ModalScreen[str]):
    CSS_PATH = "clinician.tcss"

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Who is supervising?", id="title")
            yield Static("Every decision on a draft (approve, edit, reject, regenerate, cancel, red-flag "
                         "acknowledgment) is recorded in the audit log with this name.")
            yield Input(placeholder="your name or staff ID", id="name")
            yield Label("", id="error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        if not name:
            self.query_one("#error", Label).update("Type your name or staff ID, then press Enter.")
            return
        self.dismiss(name)
