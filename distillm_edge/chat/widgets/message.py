"""One approved exchange part in the transcript: the clinician's question, or an approved answer
(rendered as Markdown, labelled with who approved it).

Each message is one widget that renders its label and body itself (Rich's Markdown for an answer),
not a container of a label and Textual's Markdown widget (which mounts a widget per block and list
item, ~15 for a short answer). Every screen layout visits every widget in the transcript, and the
first paint of each new draft is such a layout: with 20 exchanges as containers it took ~24 ms, as
single widgets ~7.6 ms (``benchmarks/chat_latency.py --history 20``).

Test: ``pytest tests/chat/test_chat_app.py``.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.padding import Padding
from rich.text import Text
from textual.widget import Widget


class MessageView(Widget):
    COMPONENT_CLASSES = {"message--label"}
    DEFAULT_CSS = """
    MessageView { height: auto; margin: 0 0 1 0; }
    MessageView > .message--label { color: $text-muted; text-style: bold; }
    MessageView.user > .message--label { color: $accent; }
    MessageView.assistant > .message--label { color: $success; }
    """

    def __init__(self, role: str, content: str, clinician: str = ""):
        super().__init__(classes=role)
        self.role, self.content, self.clinician = role, content, clinician

    @property
    def label(self) -> str:
        if self.role == "user":
            return "Question"
        return f"Answer · approved by {self.clinician}" if self.clinician else "Answer · approved"

    def render(self) -> RenderableType:
        body = Text(self.content) if self.role == "user" else Markdown(self.content)
        return Group(Text(self.label, style=self.get_component_rich_style("message--label")),
                     Padding(body, (0, 1)))
