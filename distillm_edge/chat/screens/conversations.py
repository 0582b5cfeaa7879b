"""The conversation list (ctrl+l): resume, rename, delete, export to Markdown.

Enter resumes the highlighted conversation (dismisses with its id); ``m`` renames, ``d`` deletes
(after a y/n confirmation), ``x`` exports its approved exchanges to a Markdown file; Esc goes back.

Test: ``pytest tests/chat/test_chat_conversations.py``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Label, OptionList
from textual.widgets.option_list import Option

from distillm_edge.chat.screens.confirm import ConfirmScreen
from distillm_edge.chat.screens.prompt import PromptScreen
from distillm_edge.chat.session import ChatSession
from distillm_edge.errors import UserError


def export_name(title: str, conversation_id: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40] or "conversation"
    return f"{slug}-{conversation_id[:8]}.md"


class ConversationsScreen(Screen[str | None]):
    CSS_PATH = "conversations.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("m", "rename", "Rename"),
        Binding("d", "delete", "Delete"),
        Binding("x", "export", "Export"),
    ]

    def __init__(self, session: ChatSession, export_dir: Path):
        super().__init__()
        self.session, self.export_dir = session, export_dir

    def compose(self) -> ComposeResult:
        yield Label("Conversations · Enter resume · m rename · d delete · x export · Esc back", id="title")
        yield OptionList(id="list")
        yield Label("", id="message")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_list()
        self.query_one(OptionList).focus()

    def refresh_list(self, highlight: str | None = None) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        for conv in self.session.store.list():
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(conv.updated))
            current = " (open)" if conv.id == self.session.conversation_id else ""
            options.add_option(Option(f"{conv.title}{current} · {conv.n_messages // 2} exchanges · {when}",
                                      id=conv.id))
        if options.option_count:
            index = 0
            if highlight is not None:
                try:
                    index = options.get_option_index(highlight)
                except Exception:  # the highlighted one was deleted
                    index = 0
            options.highlighted = index
        else:
            self.say("No saved conversations yet: a conversation is saved at its first approved answer.")

    def say(self, text: str) -> None:
        self.query_one("#message", Label).update(text)

    def _highlighted(self) -> str | None:
        options = self.query_one(OptionList)
        if options.highlighted is None:
            return None
        return options.get_option_at_index(options.highlighted).id

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_back(self) -> None:
        self.dismiss(None)

    def action_rename(self) -> None:
        conv_id = self._highlighted()
        if conv_id is None:
            return
        title = self.session.store.get(conv_id).title

        def done(value: str | None) -> None:
            if value:
                self.session.store.rename(conv_id, value)
                if conv_id == self.session.conversation_id:
                    self.session.conversation_title = self.session.store.get(conv_id).title
                self.refresh_list(conv_id)
                self.say(f"Renamed to “{value}”.")

        self.app.push_screen(PromptScreen("Rename conversation", value=title), done)

    def action_delete(self) -> None:
        conv_id = self._highlighted()
        if conv_id is None:
            return
        title = self.session.store.get(conv_id).title

        def done(yes: bool | None) -> None:
            if yes:
                self.session.store.delete(conv_id)
                self.refresh_list()
                self.say(f"Deleted “{title}”.")

        self.app.push_screen(ConfirmScreen(f"Delete “{title}” and its approved answers? (The audit log keeps "
                                           "every decision.)"), done)

    def action_export(self) -> None:
        conv_id = self._highlighted()
        if conv_id is None:
            return
        default = self.export_dir / export_name(self.session.store.get(conv_id).title, conv_id)

        def done(value: str | None) -> None:
            if value:
                try:
                    path = self.session.export(conv_id, value)
                except (UserError, OSError) as exc:
                    self.say(f"Export failed: {exc}")
                    return
                self.say(f"Exported approved answers to {path}")

        self.app.push_screen(PromptScreen("Export to Markdown (approved answers only)", value=str(default),
                                          explanation="File to write:"), done)
