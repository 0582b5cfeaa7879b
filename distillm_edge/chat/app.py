"""The Textual app of ``distillm-edge chat``, built by :func:`build_app` around its engine.

The app holds no chat logic: it pushes the :class:`~distillm_edge.chat.screens.chat.ChatScreen`
over a :class:`~distillm_edge.chat.session.ChatSession` (which owns the backend, store, rules and
audit log). ctrl+q quits (a draft still open is logged as cancelled), ctrl+t switches light/dark.

The app's thread workers (the model's load and each generation) run on one thread, the event
loop's default executor set to a single worker. llama.cpp's OpenMP keeps a pool of threads per
calling thread, and once two pools exist on a 2-core machine libgomp cuts their spinning: with the
model called from two threads, ``benchmarks/chat_latency.py --history 20`` saw the app decode at
~0.5x the backend alone and its first token ~15 ms later; from one thread they match. A fresh
default pool would mostly reuse one thread too, but not when a job starts while another is ending;
one thread also means two model calls never overlap.

Test: ``pytest tests/chat``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from textual.app import App
from textual.binding import Binding

from distillm_edge.chat.screens.chat import ChatScreen
from distillm_edge.chat.session import ChatSession

THEMES = {"dark": "textual-dark", "light": "textual-light"}


class ChatApp(App):
    TITLE = "distillm-edge chat"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("ctrl+t", "toggle_theme", "Theme", priority=True, show=False),
    ]

    def __init__(self, session: ChatSession, model_label: str, export_dir: Path, theme: str = "dark"):
        super().__init__()
        self.session, self.model_label, self.export_dir = session, model_label, export_dir
        self.theme = THEMES[theme]

    def on_mount(self) -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1, thread_name_prefix="chat-model"))
        self.push_screen(ChatScreen(self.session, self.model_label, self.export_dir))

    @property
    def chat(self) -> ChatScreen:
        return next(s for s in self.screen_stack if isinstance(s, ChatScreen))

    def action_toggle_theme(self) -> None:
        self.theme = THEMES["light"] if self.theme == THEMES["dark"] else THEMES["dark"]

    async def action_quit(self) -> None:
        self.session.abandon()
        self.exit()


def build_app(session: ChatSession, model_label: str = "", export_dir: str | Path | None = None,
              theme: str = "dark") -> ChatApp:
    """The chat app over ``session`` (the engine). Exports default to ``export_dir`` (else the cwd)."""
    return ChatApp(session, model_label or "model", Path(export_dir) if export_dir else Path.cwd(), theme)
