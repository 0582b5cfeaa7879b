"""Generation settings: temperature, top-p, max tokens and the system prompt.

ctrl+s validates (GenerationSettings checks the ranges; the message names the field) and dismisses
with ``(settings, system_prompt)``; Esc dismisses with ``None`` and changes nothing.

Test: ``pytest tests/chat/test_chat_app.py::test_settings_screen``.
"""

from __future__ import annotations

from dataclasses import replace

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, TextArea

from distillm_edge.backends.generate import GenerationSettings
from distillm_edge.errors import UserError


class SettingsScreen(ModalScreen[tuple[GenerationSettings, str] | None]):
    CSS_PATH = "settings.tcss"
    BINDINGS = [Binding("ctrl+s", "save", "Save", priority=True), Binding("escape", "cancel", "Cancel")]

    def __init__(self, settings: GenerationSettings, system_prompt: str):
        super().__init__()
        self.settings, self.system_prompt = settings, system_prompt

    def compose(self) -> ComposeResult:
        s = self.settings
        with Vertical(id="dialog"):
            yield Label("Generation settings · ctrl+s save · Esc cancel", id="title")
            with Horizontal(classes="row"):
                yield Label("temperature", classes="name")
                yield Input(str(s.temperature), id="temperature", type="number")
            with Horizontal(classes="row"):
                yield Label("top-p", classes="name")
                yield Input(str(s.top_p), id="top_p", type="number")
            with Horizontal(classes="row"):
                yield Label("max tokens", classes="name")
                yield Input(str(s.max_new_tokens), id="max_new_tokens", type="integer")
            yield Label("system prompt", classes="name")
            yield TextArea(self.system_prompt, id="system_prompt", soft_wrap=True)
            yield Label("", id="error")

    def on_mount(self) -> None:
        self.query_one("#temperature", Input).focus()

    def action_save(self) -> None:
        error = self.query_one("#error", Label)
        values = {}
        for name, cast in (("temperature", float), ("top_p", float), ("max_new_tokens", int)):
            raw = self.query_one(f"#{name}", Input).value.strip()
            try:
                values[name] = cast(raw)
            except ValueError:
                error.update(f"{name.replace('_', ' ')}: {raw!r} is not a {cast.__name__}.")
                return
        try:
            settings = replace(self.settings, **values)
        except UserError as exc:
            error.update(str(exc))
            return
        prompt = self.query_one("#system_prompt", TextArea).text.strip()
        if not prompt:
            error.update("system prompt: it cannot be empty.")
            return
        self.dismiss((settings, prompt))

    def action_cancel(self) -> None:
        self.dismiss(None)
