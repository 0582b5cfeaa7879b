"""Request models and response shapes of the OpenAI-compatible API, with the supervision extension.

Requests are validated with pydantic (unknown fields are ignored, as OpenAI-compatible servers do;
``n`` other than 1, tools, logprobs and non-text content parts are refused with a named field).
Every response object carries the supervision extension (documented in the README's Serve section):

- ``draft: true`` — the text is a draft for a clinician to review, never a final answer;
- ``red_flags`` — every red-flag hit in the question and the draft (``safety.redflags.Hit``
  fields; ``suppressed`` is null for an active flag);
- ``blocked`` — true when ``--block-red-flags`` withheld the draft (then ``finish_reason`` is
  ``"content_filter"`` and the content is empty);
- ``audit_id`` — the row of this exchange in the hash-chained audit log.

In a stream, every chunk has ``draft: true`` and the final chunk (the one with ``finish_reason``)
carries ``red_flags``, ``blocked`` and ``audit_id``.

Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``.

Test: ``pytest tests/serve/test_api.py``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FINISH = {"stop": "stop", "length": "length", "cancelled": "cancelled", "blocked": "content_filter"}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1
    user: str | None = Field(default=None, max_length=200)
    logprobs: Any = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s or len(s) > 64 for s in stops):
            raise ValueError("stop: at most 4 non-empty strings of at most 64 characters")
        return stops

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v):
        if v not in (None, False):
            raise ValueError("logprobs are not supported")
        return None

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: Any = None

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, v):
        if v:
            raise ValueError("tools / function calling are not supported")
        return None

    def chat_messages(self) -> list[dict[str, str]]:
        """Messages for the chat template (``developer`` is OpenAI's newer name for ``system``)."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    def question(self) -> str:
        """What the red-flag rules check as the question: every user turn."""
        return "\n".join(m.text() for m in self.messages if m.role == "user")

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("only one prompt per request is supported")
            v = v[0]
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v):
        if v:
            raise ValueError("echo is not supported")
        return v

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def supervision(red_flags: list[dict] | None, blocked: bool | None, audit_id: int | None) -> dict:
    return {"draft": True, "red_flags": red_flags, "blocked": blocked, "audit_id": audit_id}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(rid: str, created: int, model: str, text: str, finish: str, use: dict, ext: dict) -> dict:
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish}],
            "usage": use, **ext}


def chat_chunk(rid: str, created: int, model: str, delta: dict, finish: str | None, ext: dict | None = None) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **(ext or {"draft": True})}


def completion_response(rid: str, created: int, model: str, text: str, finish: str | None, use: dict | None,
                        ext: dict | None = None) -> dict:
    body = {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
            **(ext or {"draft": True})}
    if use is not None:
        body["usage"] = use
    return body


def usage_chunk(rid: str, created: int, model: str, obj: str, use: dict) -> dict:
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": use, "draft": True}
