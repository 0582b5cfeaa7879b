"""The `distillm-edge serve` configuration: one frozen dataclass, validated when built.

The bind policy lives here too (:func:`check_bind`): loopback by default, and any other address
only with an API key, so a clinic's model is never exposed on the network without a key.

Test: ``pytest tests/serve/test_security.py``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from distillm_edge.errors import UserError

BACKENDS = ("auto", "gguf", "onnx", "torch")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"; False for anything else (including 0.0.0.0)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so it is not loopback


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen off loopback without an API key."""
    if not is_loopback(host) and not api_key:
        raise UserError(
            f"--host {host} is not a loopback address: serving off this machine requires an API key. "
            "Pass --api-key KEY (or set DISTILLM_EDGE_API_KEY), or bind to 127.0.0.1."
        )


@dataclass(frozen=True)
class ServeConfig:
    model: str = "smollm2-135m-instruct"
    backend: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    audit_db: Path | None = None  # None: safety.audit.default_audit_path()
    parallel: int = 4  # concurrent generations (slots)
    queue: int = 16  # requests waiting for a slot beyond which the server answers 429
    block_red_flags: bool = False  # answer finish_reason "content_filter" instead of a draft with active red flags
    rules: Path | None = None  # red-flag rules file (None: the packaged default)
    threads: int = 0  # backend threads (0: the backend's default)
    ctx_per_slot: int = 2048  # llama.cpp: KV cache tokens per slot (prompt + answer)
    max_body_bytes: int = 256 * 1024
    max_prompt_tokens: int = 1536
    max_tokens_limit: int = 512  # the largest max_tokens a request may ask for
    default_max_tokens: int = 256
    shutdown_grace_s: float = 10.0  # SIGTERM: in-flight generations get this long, then are cancelled

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"--backend {self.backend}: use one of {', '.join(BACKENDS)}.")
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port {self.port}: a TCP port is 0..65535 (0 picks a free one).")
        if self.parallel < 1:
            raise UserError(f"--parallel {self.parallel}: at least 1 concurrent generation.")
        if self.queue < 0:
            raise UserError(f"--queue {self.queue}: the queue length cannot be negative.")
        if self.api_key is not None and len(self.api_key) < 8:
            raise UserError("--api-key: use at least 8 characters (e.g. `openssl rand -hex 24`).")
        for name in ("max_body_bytes", "max_prompt_tokens", "max_tokens_limit", "default_max_tokens"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be positive (got {getattr(self, name)}).")
        if self.default_max_tokens > self.max_tokens_limit:
            raise UserError(f"default_max_tokens {self.default_max_tokens} exceeds max_tokens_limit "
                              f"{self.max_tokens_limit}.")
        if self.max_prompt_tokens + self.max_tokens_limit > self.ctx_per_slot:
            raise UserError(
                f"max_prompt_tokens {self.max_prompt_tokens} + max_tokens_limit {self.max_tokens_limit} exceed "
                f"the per-slot context of {self.ctx_per_slot} tokens; raise --ctx-per-slot or lower the limits."
            )
        check_bind(self.host, self.api_key)
