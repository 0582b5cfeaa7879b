"""One API exchange under supervision, run in a worker thread: red flags, generation, audit.

:meth:`Supervisor.run` is the whole life of a request after validation, in order:

1. with ``--block-red-flags``, the question is assessed first: an active red flag blocks the
   request before any generation;
2. the draft is generated through the engine's slots with ``backends.generate.stream_text``
   (streamed text pieces go to ``emit``; with ``--block-red-flags`` they are held back until the
   whole draft has been assessed, so a blocked draft never reaches the client);
3. ``safety.gate.assess`` checks the question and the draft; the hits go into the response;
4. the exchange is appended to the hash-chained audit log (action ``api_response`` or
   ``api_blocked``; a cancelled or failed generation is logged too, with the reason).

The HTTP layer only presents the returned :class:`Outcome`.

Test: ``pytest tests/serve/test_api.py``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass

from distillm_edge.backends.generate import GenerationSettings, Result, stream_text
from distillm_edge.safety.audit import AuditEvent, AuditLog
from distillm_edge.safety.gate import assess
from distillm_edge.safety.redflags import RuleSet
from distillm_edge.serve.engine import Engine


@dataclass(frozen=True)
class Prepared:
    """A validated request, tokenized and within the limits."""

    kind: str  # "chat" | "completion"
    rid: str
    created: int
    prompt_text: str  # what the audit log records as the prompt (chat: the messages as JSON)
    question: str  # what the red-flag rules check as the question
    prompt_ids: list[int]
    settings: GenerationSettings
    clinician: str  # the request's "user" field, or "api"


@dataclass
class Outcome:
    result: Result
    text: str  # the text given to the client ("" when blocked)
    finish: str  # "stop" | "length" | "cancelled" | "blocked"
    red_flags: list[dict]  # every hit (Hit.to_dict), suppressed ones included
    blocked: bool
    audit_id: int


def chat_prompt_text(messages: list[dict[str, str]]) -> str:
    return json.dumps(messages, ensure_ascii=False)


class Supervisor:
    def __init__(self, engine: Engine, rules: RuleSet, audit: AuditLog, model_id: str, model_sha256: str,
                 block_red_flags: bool):
        self.engine, self.rules, self.audit = engine, rules, audit
        self.model_id, self.model_sha256 = model_id, model_sha256
        self.block_red_flags = block_red_flags

    def run(self, prep: Prepared, cancel: threading.Event, emit: Callable[[str], None] | None = None) -> Outcome:
        result = Result(prompt_tokens=len(prep.prompt_ids))
        if self.block_red_flags and assess(self.rules, prep.question).requires_ack:
            return self._finish(prep, result, "blocked", "red flags in the question: not generated")
        held: list[str] = []
        try:
            for delta in stream_text(self.engine.view(cancel), prep.prompt_ids, prep.settings, cancel, result):
                if self.block_red_flags or emit is None:
                    held.append(delta.text)
                else:
                    emit(delta.text)
        except Exception as exc:
            self._log(prep, result, "stop", [], False, f"error: {type(exc).__name__}: {exc}")
            raise
        assessment = assess(self.rules, prep.question, result.text)
        if self.block_red_flags and assessment.requires_ack:
            return self._finish(prep, result, "blocked", "red flags in the draft: withheld", assessment)
        if emit is not None and self.block_red_flags and result.text:
            emit(result.text)
        reason = "cancelled: client disconnected or server shutting down" if result.finish_reason == "cancelled" else None
        return self._finish(prep, result, result.finish_reason, reason, assessment)

    def _finish(self, prep: Prepared, result: Result, finish: str, reason: str | None, assessment=None) -> Outcome:
        assessment = assessment or assess(self.rules, prep.question, result.text)
        hits = [h.to_dict() for h in assessment.hits]
        blocked = finish == "blocked"
        audit_id = self._log(prep, result, finish, hits, blocked, reason)
        return Outcome(result, "" if blocked else result.text, finish, hits, blocked, audit_id)

    def _log(self, prep: Prepared, result: Result, finish: str, hits: list[dict], blocked: bool,
             reason: str | None) -> int:
        settings = {**prep.settings.to_dict(), "endpoint": prep.kind, "finish": finish,
                    "block_red_flags": self.block_red_flags, "prompt_tokens": len(prep.prompt_ids),
                    "completion_tokens": len(result.token_ids)}
        event = AuditEvent(
            clinician=prep.clinician, model_id=self.model_id, model_sha256=self.model_sha256, settings=settings,
            prompt=prep.prompt_text, draft=result.text, action="api_blocked" if blocked else "api_response",
            final_text=None if blocked or reason else result.text, red_flags=hits, conversation_id=prep.rid,
            reason=reason,
        )
        return self.audit.append(event)
