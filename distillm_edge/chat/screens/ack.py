"""The red-flag acknowledgment: approval of a flagged draft needs the clinician to type ``ack``.

It lists every active red flag (rule, severity, matched words, advice). Typing ``ack`` and Enter
dismisses with ``True`` (the session then logs ``acknowledge_red_flag`` and approves); Esc
dismisses with ``False`` and nothing is approved. A single key press can never approve a flagged
draft.

Test: ``pytest tests/chat/test_chat_app.py::test_red_flag_needs_acknowledgment``.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from distillm_edge.chat.widgets.banner import describe_hits
from distillm_edge.safety.redflags import Hit

CONFIRM_WORD = "ack"


class AckScreen(ModalScreen[bool]):
    CSS_PATH = "ack.tcss"
    BINDINGS = [Binding("escape", "cancel", "Back")]

    def __init__(self, hits: tuple[Hit, ...]):
        super().__init__()
        self.hits = hits

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("⚠ Red flag: escalation needed", id="title")
            yield Static(describe_hits(self.hits), id="hits")
            yield Static(f"Type {CONFIRM_WORD} and press Enter to confirm you have considered the escalation. "
                         "The acknowledgment is logged with your name. Esc goes back.")
            yield Input(placeholder=CONFIRM_WORD, id="confirm")
            yield Label("", id="error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip().lower() != CONFIRM_WORD:
            self.query_one("#error", Label).update(f"Type {CONFIRM_WORD} exactly, or press Esc to go back.")
            return
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
