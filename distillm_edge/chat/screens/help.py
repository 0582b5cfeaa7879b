"""The help screen (``?`` or F1): every key, and what each supervision flow does.

Test: ``pytest tests/chat/test_chat_snapshots.py``.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# Keys

| key | where | what |
|---|---|---|
| Enter | input | send the question; the answer streams in as a **draft** |
| Esc | generating / draft | cancel (logged); the question returns to the input |
| a | draft | approve: the draft enters the conversation |
| e | draft | edit, then approve with ctrl+s (Esc returns to the draft) |
| r | draft | reject with a reason (logged); nothing enters the conversation |
| g | draft | regenerate another sample (the discarded draft is logged) |
| ctrl+n | idle | new conversation |
| ctrl+l | idle | conversations: Enter resume, m rename, d delete, x export |
| ctrl+x | idle | export this conversation to Markdown (approved text only) |
| ctrl+o | idle | settings: temperature, top-p, max tokens, system prompt |
| ctrl+t | anywhere | light / dark theme |
| ? or F1 | empty input | this help |
| ctrl+q | anywhere | quit |

# Red flags

A question or draft that matches an emergency rule shows a red banner with the rule, the matched
words and the advice. One-key approval is blocked: `a` (or saving an edit) opens a confirmation
where you type **ack** and press Enter; the acknowledgment is logged, then the answer is approved.

Every decision is written to the audit log with your name, the model and its hash, the settings,
the question, the draft and the final text. Press Esc to close this help.
"""


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape", "close", "Close"), Binding("q", "close", show=False),
                Binding("question_mark", "close", show=False), Binding("f1", "close", show=False)]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Markdown(HELP)

    def action_close(self) -> None:
        self.dismiss(None)
