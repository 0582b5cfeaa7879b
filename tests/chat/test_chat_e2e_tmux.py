"""End to end: the real ``distillm-edge chat`` in a real terminal (tmux, 80x24) on the embedded
SmolLM2 GGUF, driven by keystrokes (send-keys) and read from the screen (capture-pane).

It identifies via --clinician, lowers max tokens in the settings screen, asks a question and
approves the draft, asks a red-flag question (banner; ``a`` opens the acknowledgment; types ack),
quits with ctrl+q, then checks the audit log (chain verifies; one event per decision) and the
conversation database.

Run: ``pytest tests/chat/test_chat_e2e_tmux.py`` (slow; needs tmux: ``apt-get install -y tmux``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from distillm_edge.chat.store import ConversationStore
from distillm_edge.safety.audit import AuditLog

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install -y tmux)")]

CLI = Path(sys.executable).with_name("distillm-edge")


class Tmux:
    def __init__(self, socket: str):
        self.socket = socket

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "chat")

    def wait_for(self, text: str, timeout: float = 300.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.25)
        raise AssertionError(f"{text!r} never appeared on the screen; last screen:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        for key in keys:  # one at a time, as a person types: a key must not race the screen it opens
            self("send-keys", "-t", "chat", key)
            time.sleep(0.3)

    def type(self, text: str) -> None:
        self("send-keys", "-t", "chat", "-l", text)
        time.sleep(0.3)


def test_chat_in_a_real_terminal(tmp_path):
    audit_db, chat_db = tmp_path / "audit.sqlite3", tmp_path / "chat.sqlite3"
    env = {"DISTILLM_EDGE_HOME": os.environ.get("DISTILLM_EDGE_HOME", str(tmp_path)), "TERM": "xterm-256color"}
    command = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.quote(str(CLI)), "chat",
                        "--clinician", shlex.quote("Dr E2E"), "--audit-db", shlex.quote(str(audit_db)),
                        "--db", shlex.quote(str(chat_db))])
    tmux = Tmux(f"distillm-chat-{uuid.uuid4().hex[:8]}")
    tmux("new-session", "-d", "-s", "chat", "-x", "80", "-y", "24", f"{command}; sleep 600")
    try:
        screen = tmux.wait_for("Model ready")
        assert "DRAFT ANSWERS; NOT FOR AUTONOMOUS CLINICAL DECISIONS" in screen
        assert "smollm2-135m-instruct · gguf Q4_1" in screen and "/8192" in screen and "Dr E2E" in screen

        tmux.keys("C-o")  # settings: max tokens 24 keeps the run short
        tmux.wait_for("Generation settings")
        tmux.keys("Tab", "Tab", "End", *["BSpace"] * 6)  # clear the field whatever its selection
        tmux.type("24")
        tmux.keys("C-s")
        tmux.wait_for("max tokens 24")

        tmux.type("What is hypertension?")
        tmux.keys("Enter")
        screen = tmux.wait_for("Draft ready")
        assert "DRAFT · not approved" in screen
        tmux.keys("a")
        tmux.wait_for("Approved; saved")

        tmux.type("Crushing chest pain radiating to my left arm and sweating")
        tmux.keys("Enter")
        screen = tmux.wait_for("RED FLAG: a, then type ack")
        assert "cardiac.chest_pain_radiation" in screen
        tmux.keys("a")
        tmux.wait_for("Red flag: escalation needed")
        tmux.type("ack")
        tmux.keys("Enter")
        tmux.wait_for("Approved; saved")
        tmux.keys("C-q")
        deadline = time.monotonic() + 60
        while "Approved; saved" in tmux.screen() and time.monotonic() < deadline:
            time.sleep(0.25)  # the app has left the alternate screen once it exits
    finally:
        subprocess.run(["tmux", "-L", tmux.socket, "kill-server"], capture_output=True)

    log = AuditLog(audit_db)
    try:
        rows = list(log.rows())
        assert [r["action"] for r in rows] == ["session_start", "approve", "acknowledge_red_flag", "approve"]
        assert {r["clinician"] for r in rows} == {"Dr E2E"}
        assert rows[1]["settings"]["max_new_tokens"] == 24 and rows[1]["model_id"].startswith("gguf:")
        assert log.verify().ok
    finally:
        log.close()
    store = ConversationStore(chat_db)
    try:
        (conv,) = store.list()
        assert [m.role for m in store.messages(conv.id)] == ["user", "assistant", "user", "assistant"]
    finally:
        store.close()
