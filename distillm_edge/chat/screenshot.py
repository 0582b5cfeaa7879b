"""Render the README's chat screenshot (an SVG from Textual's own screenshot) on the embedded model.

It drives the real app with the pilot: identifies as "Dr Demo", asks a question and corrects the
draft in the edit screen before approving it (the 135M model's draft is usually wrong: supervision
is the point), then asks a red-flag question and stops at its draft (banner shown, approval blocked).
Greedy decoding, so the picture is the same on every run with the same model.

Run: ``python -m distillm_edge.chat.screenshot docs/chat.svg`` (add ``--light`` for the light theme).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from textual.widgets import TextArea

from distillm_edge.backends.generate import GenerationSettings
from distillm_edge.chat.app import build_app
from distillm_edge.chat.config import DEFAULT_MODEL, DEFAULT_SYSTEM_PROMPT
from distillm_edge.chat.run import open_chat_backend
from distillm_edge.chat.session import ChatSession, State
from distillm_edge.chat.store import ConversationStore
from distillm_edge.safety.audit import AuditLog
from distillm_edge.safety.redflags import load_rules

QUESTIONS = ("What is the first-line treatment for uncomplicated hypertension?",
             "58-year-old man with crushing chest pain radiating to the left arm and sweating. Next steps?")

CORRECTED = ("A thiazide-like diuretic, an ACE inhibitor (or ARB) or a calcium-channel blocker, chosen by "
             "age, ethnicity and comorbidities; lifestyle measures for everyone.")


async def _wait(pilot, session: ChatSession, state: State) -> None:
    while session.state is not state:
        await pilot.pause(0.05)


async def render(out: Path, light: bool, size: tuple[int, int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        session = ChatSession(lambda: open_chat_backend(DEFAULT_MODEL), load_rules(),
                              AuditLog(Path(tmp) / "audit.sqlite3"), ConversationStore(Path(tmp) / "chat.sqlite3"),
                              DEFAULT_SYSTEM_PROMPT, GenerationSettings(max_new_tokens=60, temperature=0.0),
                              clinician="Dr Demo")
        app = build_app(session, model_label=DEFAULT_MODEL, export_dir=tmp, theme="light" if light else "dark")
        async with app.run_test(size=size) as pilot:
            await _wait(pilot, session, State.IDLE)
            await pilot.press(*QUESTIONS[0], "enter")
            await _wait(pilot, session, State.DRAFT)
            await pilot.press("e")
            await pilot.pause(0.2)
            pilot.app.screen.query_one(TextArea).text = CORRECTED
            await pilot.press("ctrl+s")
            await _wait(pilot, session, State.IDLE)
            await pilot.press(*QUESTIONS[1], "enter")
            await _wait(pilot, session, State.DRAFT)
            await pilot.pause(0.2)
            out.parent.mkdir(parents=True, exist_ok=True)
            app.save_screenshot(filename=out.name, path=str(out.parent))
        session.close()
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--light", action="store_true")
    parser.add_argument("--size", default="100x32", help="terminal columns x rows")
    args = parser.parse_args()
    cols, rows = (int(x) for x in args.size.lower().split("x"))
    asyncio.run(render(args.out, args.light, (cols, rows)))


if __name__ == "__main__":
    main()
