"""The help screen (``?`` or F1): every key, and what each supervision flow does.

Test: ``pytest tests/chat/test_chat_snapshots.py``.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

KEYS = (
    ("Enter", "send the question; the answer streams in as a DRAFT"),
    ("Esc", "cancel the answer being generated, or the draft (logged)"),
    ("a", "approve the draft: it enters the conversation"),
    ("e", "edit the draft, then ctrl+s approves the edited text"),
    ("r", "reject the draft with a reason (logged; nothing is kept)"),
    ("g", "regenerate: another sample (the discarded draft is logged)"),
    ("ctrl+n", "new conversation"),
    ("ctrl+l", "conversations: Enter resume · m rename · d delete · x export"),
    ("ctrl+x", "export this conversation to Markdown (approved text only)"),
    ("ctrl+o", "settings: temperature, top-p, max tokens, system prompt"),
    ("ctrl+t", "light / dark theme"),
    ("? / F1", "this help (? from an empty input)"),
    ("ctrl+q", "quit (an open draft is logged as cancelled)"),
)
RED_FLAGS = (
    "Red flags: a question or draft that matches an emergency rule shows a red banner with the rule, "
    "the matched words and the advice. One key cannot approve it: a (or saving an edit) asks you to "
    "type ack; the acknowledgment is logged, then the answer is approved.\n\n"
    "Every decision is logged with your name, the model and its hash, the settings, the question, "
    "the draft and the final text. Only approved text is kept in conversations and exports."
)


def help_text() -> Group:
    table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(ratio=1)
    for key, what in KEYS:
        table.add_row(key, what)
    return Group(Text("Keys", style="bold underline"), table, Text(""), Text(RED_FLAGS))


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape", "close", "Close"), Binding("q", "close", show=False),
                Binding("question_mark", "close", show=False), Binding("f1", "close", show=False)]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(help_text())
            yield Label("Esc closes", id="hint")

    def action_close(self) -> None:
        self.dismiss(None)
