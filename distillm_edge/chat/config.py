"""The frozen config of ``distillm-edge chat``: which model and backend, who supervises, where state lives.

Built by ``distillm_edge/cli/chat.py`` from its options and validated here, before any model loads:
a missing ``--system-prompt`` file or an unknown backend is named with the fix.

Test: ``pytest tests/chat/test_chat_config.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distillm_edge.errors import UserError
from distillm_edge.io import home

DEFAULT_MODEL = "smollm2-135m-instruct"
CHAT_BACKENDS = ("auto", "gguf", "onnx", "torch")
DEFAULT_SYSTEM_PROMPT = (
    "You are a medical assistant drafting answers for a clinician, who reviews every answer before "
    "it is used. Answer concisely and accurately, say when you are unsure, and say when a situation "
    "needs urgent escalation."
)


def default_db_path() -> Path:
    """Where conversations are kept: ``$DISTILLM_EDGE_HOME/chat.sqlite3``."""
    return home() / "chat.sqlite3"


@dataclass(frozen=True)
class ChatConfig:
    model: str = DEFAULT_MODEL
    backend: str = "auto"  # auto: an embedded name runs its shipped GGUF, else open_backend's choice
    clinician: str | None = None  # None: the app asks at start
    audit_db: Path | None = None  # None: safety.audit.default_audit_path()
    system_prompt_file: Path | None = None
    db: Path | None = None  # None: default_db_path()

    def __post_init__(self) -> None:
        if self.backend not in CHAT_BACKENDS:
            raise UserError(f"--backend {self.backend!r} is not supported; use one of: {', '.join(CHAT_BACKENDS)}.")
        if not self.model.strip():
            raise UserError("--model is empty; pass an embedded name, a .gguf file, an HF or ONNX directory.")
        if self.clinician is not None and not self.clinician.strip():
            raise UserError("--clinician is empty; pass your name or staff ID (or leave it out to be asked).")
        if self.system_prompt_file is not None and not Path(self.system_prompt_file).is_file():
            raise UserError(f"--system-prompt {self.system_prompt_file}: no such file; pass a UTF-8 text file.")

    def system_prompt(self) -> str:
        if self.system_prompt_file is None:
            return DEFAULT_SYSTEM_PROMPT
        text = Path(self.system_prompt_file).read_text(encoding="utf-8").strip()
        if not text:
            raise UserError(f"--system-prompt {self.system_prompt_file}: the file is empty; write the prompt in it.")
        return text
