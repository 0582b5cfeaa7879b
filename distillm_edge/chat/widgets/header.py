"""The chat header: model, backend, quantization, context used/available, clinician, and the
persistent notice that answers are drafts.

Test: ``pytest tests/chat/test_chat_snapshots.py``.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import Static

NOTICE = "DRAFT ANSWERS; NOT FOR AUTONOMOUS CLINICAL DECISIONS"


def short_model_name(spec: str) -> str:
    """An embedded name as is; a path by its last part (a file's name, a directory's name)."""
    path = Path(spec)
    return path.name if len(path.parts) > 1 or path.suffix else spec


class ChatHeader(Static):
    DEFAULT_CSS = """
    ChatHeader { dock: top; height: 2; background: $panel; color: $text; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.model = "loading model…"
        self.backend = self.quant = ""
        self.ctx_used = self.n_ctx = 0
        self.clinician = ""
        self.title = ""

    def show(self, **fields) -> None:
        """Update any of: model, backend, quant, ctx_used, n_ctx, clinician, title."""
        for key, value in fields.items():
            setattr(self, key, value)
        self.update(self.render_text())

    def render_text(self) -> Text:
        line = Text(" ", style="bold")
        line.append(self.model, style="bold")
        if self.backend:
            line.append(f" · {self.backend} {self.quant}".rstrip())
        if self.n_ctx:
            line.append(f" · ctx {self.ctx_used}/{self.n_ctx}")
        if self.clinician:
            line.append(f" · {self.clinician}")
        if self.title:
            line.append(f" · {self.title}", style="italic")
        line.truncate(max(self.size.width, 20), overflow="ellipsis")
        notice = Text(f" ⚠ {NOTICE} ", style="bold reverse")
        return Text("\n").join([line, notice])

    def on_mount(self) -> None:
        self.update(self.render_text())

    def on_resize(self) -> None:
        self.update(self.render_text())
