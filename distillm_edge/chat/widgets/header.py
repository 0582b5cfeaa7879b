"""The chat header: model, backend, quantization, context used/available, clinician and
conversation on one line; under it, always, the notice that answers are drafts.

Test: ``pytest tests/chat/test_chat_snapshots.py``.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

NOTICE = "DRAFT ANSWERS; NOT FOR AUTONOMOUS CLINICAL DECISIONS"


def short_model_name(spec: str) -> str:
    """An embedded name as is; a path by its last part (a file's name, a directory's name)."""
    path = Path(spec)
    return path.name if len(path.parts) > 1 or path.suffix else spec


class ChatHeader(Vertical):
    DEFAULT_CSS = """
    ChatHeader { height: 2; }
    ChatHeader #info { height: 1; background: $panel; color: $foreground; padding: 0 1; }
    ChatHeader #notice { height: 1; background: $warning; color: $background; text-style: bold;
                         text-align: center; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.model = "loading model…"
        self.backend = self.quant = ""
        self.ctx_used = self.n_ctx = 0
        self.clinician = ""
        self.title = ""

    def compose(self) -> ComposeResult:
        yield Static(self.info_text(), id="info")
        yield Static(f"⚠ {NOTICE}", id="notice")

    def show(self, **fields) -> None:
        """Update any of: model, backend, quant, ctx_used, n_ctx, clinician, title."""
        for key, value in fields.items():
            setattr(self, key, value)
        self.query_one("#info", Static).update(self.info_text())

    def info_text(self) -> Text:
        line = Text(self.model, style="bold", no_wrap=True, overflow="ellipsis")
        if self.backend:
            line.append(f" · {self.backend} {self.quant}".rstrip())
        if self.n_ctx:
            line.append(f" · ctx {self.ctx_used}/{self.n_ctx}")
        if self.clinician:
            line.append(f" · {self.clinician}")
        if self.title:
            line.append(f" · {self.title}", style="italic")
        return line

    def render_text(self) -> Text:
        """Both lines as plain text (tests and the tmux end-to-end read this)."""
        return Text("\n").join([self.info_text(), Text(f"⚠ {NOTICE}")])
