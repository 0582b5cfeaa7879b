"""The escalation banner: shown while a question or draft trips an active red flag. Its first line
says approval needs acknowledgment (so it is never cut off); then each matched rule with its
severity, the matched words and the advice (:func:`describe_hits`, which the acknowledgment screen
shows too).

Test: ``pytest tests/chat/test_chat_app.py::test_red_flag_needs_acknowledgment``.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from distillm_edge.safety.redflags import Hit


class RedFlagBanner(Static):
    DEFAULT_CSS = """
    RedFlagBanner { height: auto; max-height: 8; display: none;
                    background: $error; color: $text; padding: 0 1; }
    RedFlagBanner.shown { display: block; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hits: tuple[Hit, ...] = ()
        self.acknowledged = False

    def show_hits(self, hits: tuple[Hit, ...], acknowledged: bool = False) -> None:
        self.hits, self.acknowledged = tuple(hits), acknowledged
        self.set_class(bool(self.hits), "shown")
        self.update(self.render_text() if self.hits else "")

    def render_text(self) -> Text:
        """The decision first (it must never be cut off), then each rule with its advice."""
        if self.acknowledged:
            text = Text("⚠ RED FLAG · escalation acknowledged\n", style="bold")
        else:
            text = Text("⚠ RED FLAG · approval blocked until acknowledged: press a, then type ack\n",
                        style="bold")
        return text.append_text(describe_hits(self.hits))


def describe_hits(hits: tuple[Hit, ...]) -> Text:
    """Each matched rule once: severity, title, rule id, the matched words and where, then its
    advice. The banner and the acknowledgment screen (``screens/ack.py``) both show this."""
    text, seen = Text(), set()
    for hit in hits:
        if hit.rule_id in seen:
            continue
        seen.add(hit.rule_id)
        text.append(f"{hit.severity.upper()} · {hit.title}", style="bold")
        text.append(f" · rule {hit.rule_id} · “{hit.matched}” in the {hit.source}\n")
        text.append(f"{hit.advice}\n")
    text.rstrip()
    return text
