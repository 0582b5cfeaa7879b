"""The chat engine: one supervised conversation over a backend, without any UI.

A :class:`ChatSession` owns the backend, the conversation store, the red-flag rules and the audit
log, and runs the supervision state machine the app only presents::

    loading ──load()──▶ idle ──submit(q)──▶ generating ──complete()──▶ draft
                         ▲                      │ cancel (Esc) ─ logged ─▶ idle
                         │                      ▼
                         └── approve / edit_approve / reject / cancel ── draft ── regenerate ─▶ generating

Every decision is one :class:`~distillm_edge.safety.audit.AuditEvent` (clinician, model id + hash,
settings, question, draft, action, final text, red-flag hits). Only an approved (or edited, then
approved) answer enters the conversation store, together with its question. A draft whose question
or text trips an active red flag (``safety.gate.assess``) cannot be approved until the clinician
acknowledges it (:meth:`acknowledge`, logged as ``acknowledge_red_flag``); an edit that brings in a
new red flag needs its own acknowledgment.

The app calls :meth:`stream` from a worker thread and every other method from the UI thread; a
session never runs two generations at once (the states forbid it).

Enter tokenizes only the new question: whenever the conversation so far changes (load, approve,
resume, new conversation, settings) the session renders and tokenizes it while idle, which both
counts its tokens (:attr:`ctx_used`) and prepares a
:class:`~distillm_edge.backends.prompt.ChatPromptCache`; :meth:`submit` then takes the prompt
from the cache, exactly ``backend.chat_ids(messages)`` (it falls back to tokenizing everything
when the prepared text no longer matches).

Test: ``pytest tests/chat/test_chat_session.py``.
"""

from __future__ import annotations

import enum
import functools
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from distillm_edge.backends.generate import (
    Delta,
    GenerationSettings,
    Result,
    context_length,
    fit_messages,
    stream_text,
)
from distillm_edge.backends.prompt import ChatPromptCache
from distillm_edge.chat.store import ConversationStore, title_from
from distillm_edge.errors import UserError
from distillm_edge.io import atomic_write_text
from distillm_edge.safety.audit import AuditEvent, AuditLog, model_identity
from distillm_edge.safety.gate import Assessment, assess
from distillm_edge.safety.redflags import Hit, RuleSet


class State(enum.Enum):
    LOADING = "loading"
    IDLE = "idle"
    GENERATING = "generating"
    DRAFT = "draft"


class SessionError(UserError):
    """An action the current state does not allow, or bad input to it (the UI shows the message)."""


class AckRequired(SessionError):
    """Approval is blocked until the listed active red flags are acknowledged."""

    def __init__(self, hits: tuple[Hit, ...]):
        self.hits = hits
        rules = ", ".join(sorted({h.rule_id for h in hits}))
        super().__init__(f"red flag ({rules}): acknowledge the escalation before approving.")


@dataclass
class Turn:
    """One generation request: the question, the trimmed prompt and its settings.

    The question's own red-flag check (:attr:`question_check`) runs on first use, not at Enter: the
    app reads it once the first text is on screen (the banner), a cancellation reads it for its audit
    row, and a draft is never approvable without :meth:`ChatSession.complete`'s check of the question
    and the draft together."""

    question: str
    messages: list[dict]  # what was sent (system + kept history + question)
    prompt_ids: list[int]
    dropped: int  # history messages trimmed to fit the context window
    settings: GenerationSettings
    rules: RuleSet
    cancel: threading.Event = field(default_factory=threading.Event)
    result: Result = field(default_factory=Result)
    partial: str = ""  # text streamed so far (kept if the app quits mid-generation)

    @functools.cached_property
    def question_check(self) -> Assessment:
        """Red flags of the question alone (shown while streaming; logged with a cancellation)."""
        return assess(self.rules, self.question)


@dataclass
class Draft:
    turn: Turn
    text: str
    finish_reason: str
    assessment: Assessment  # question + draft
    acknowledged: set[str] = field(default_factory=set)  # rule ids the clinician acknowledged

    @property
    def question(self) -> str:
        return self.turn.question


def _hit_dicts(*assessments: Assessment) -> list[dict]:
    seen, out = set(), []
    for a in assessments:
        for hit in a.hits:
            d = hit.to_dict()
            key = (d.get("rule_id"), d.get("source"), d.get("start"), d.get("end"))
            if key not in seen:
                seen.add(key)
                out.append(d)
    return out


class ChatSession:
    def __init__(self, loader: Callable[[], object], rules: RuleSet, audit: AuditLog, store: ConversationStore,
                 system_prompt: str, settings: GenerationSettings | None = None, clinician: str | None = None):
        self._loader = loader
        self.rules, self.audit, self.store = rules, audit, store
        self.system_prompt = system_prompt
        self.settings = settings or GenerationSettings()
        self.clinician = clinician.strip() if clinician else None
        self.state = State.LOADING
        self.backend = None
        self.model_id = self.model_sha256 = ""
        self.n_ctx = 0
        self.ctx_used = 0
        self.conversation_id = uuid.uuid4().hex  # created in the store at its first approved answer
        self.conversation_title: str | None = None
        self.history: list[dict] = []  # approved exchanges of the current conversation
        self.draft: Draft | None = None
        self.turn: Turn | None = None
        self._generations = 0  # seeds differ per generation, so regenerate gives another sample
        self._started = False
        self._prompt: ChatPromptCache | None = None  # the conversation so far, tokenized while idle

    # --- setup -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Open the backend and hash the model (slow: call from a worker thread)."""
        backend = self._loader()
        self.model_id, self.model_sha256 = model_identity(backend)
        self.n_ctx = context_length(backend)
        self.backend = backend
        self.ctx_used = self._history_tokens()
        self.state = State.IDLE
        self._log_start()

    def set_clinician(self, name: str) -> None:
        name = name.strip()
        if not name:
            raise SessionError("type your name or staff ID: every decision is recorded with it.")
        self.clinician = name
        self._log_start()

    def _log_start(self) -> None:
        if self._started or self.backend is None or not self.clinician:
            return
        self._started = True
        self._log("session_start", prompt="", draft="", final_text=None, red_flags=[])

    @property
    def ready(self) -> bool:
        return self.backend is not None and bool(self.clinician)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    # --- generation ------------------------------------------------------------------------------

    def submit(self, question: str) -> Turn:
        """Start answering ``question``: trims the history to the context window (UI thread)."""
        self._need(State.IDLE)
        question = question.strip()
        if not question:
            raise SessionError("type a question first.")
        if not self.clinician:
            raise SessionError("identify yourself first: every decision is recorded with your name.")
        return self._start_turn(question)

    def _start_turn(self, question: str) -> Turn:
        settings = replace(self.settings, seed=self.settings.seed + self._generations)
        messages = [{"role": "system", "content": self.system_prompt}, *self.history,
                    {"role": "user", "content": question}]
        prompt_ids, kept, dropped = self._prompt_cache().ids(messages), messages, 0
        if len(prompt_ids) + settings.max_new_tokens > self.n_ctx:  # rare: only then trim (and re-tokenize)
            try:
                kept, dropped = fit_messages(self.backend, messages, self.n_ctx, reserve=settings.max_new_tokens)
            except UserError as exc:
                raise SessionError(str(exc)) from None
            prompt_ids = self.backend.chat_ids(kept)
        self._generations += 1
        self.turn = Turn(question=question, messages=kept, prompt_ids=prompt_ids, dropped=dropped,
                         settings=settings, rules=self.rules)
        self.draft = None
        self.ctx_used = len(prompt_ids)
        self.state = State.GENERATING
        return self.turn

    def stream(self, turn: Turn) -> Iterator[Delta]:
        """Yield the draft's text deltas (worker thread); ``turn.result`` is filled at the end."""
        for delta in stream_text(self.backend, turn.prompt_ids, turn.settings, turn.cancel, turn.result):
            turn.partial += delta.text
            yield delta

    def complete(self, turn: Turn) -> Draft | None:
        """The worker finished ``turn``: make it the draft, or log the cancellation (UI thread).

        Returns the draft, or None when it was cancelled (or is stale: the session moved on)."""
        if turn is not self.turn or self.state is not State.GENERATING:
            return None
        result = turn.result
        self.ctx_used = result.prompt_tokens + result.completion_tokens
        if turn.cancel.is_set() or result.finish_reason == "cancelled":
            self._log("cancel", prompt=turn.question, draft=result.text, final_text=None,
                      red_flags=_hit_dicts(turn.question_check), settings=turn.settings)
            self._to_idle()
            return None
        self.draft = Draft(turn=turn, text=result.text, finish_reason=result.finish_reason,
                           assessment=assess(self.rules, turn.question, result.text))
        self.state = State.DRAFT
        return self.draft

    def failed(self, turn: Turn) -> None:
        """The worker raised: drop the turn (nothing was drafted, so nothing is logged)."""
        if turn is self.turn:
            self._to_idle()

    def cancel(self) -> str | None:
        """Esc. Generating: ask the worker to stop (logged at :meth:`complete`). Draft: discard it and
        log ``cancel``; returns the question so the UI can put it back in the input."""
        if self.state is State.GENERATING and self.turn is not None:
            self.turn.cancel.set()
            return None
        draft = self._need_draft()
        self._log("cancel", prompt=draft.question, draft=draft.text, final_text=None,
                  red_flags=_hit_dicts(draft.assessment), settings=draft.turn.settings)
        self._to_idle()
        return draft.question

    def abandon(self) -> None:
        """The app is quitting: an answer still generating or awaiting a decision is logged as
        ``cancel`` (reason "quit") so no draft leaves the audit log unaccounted for."""
        if self.state is State.GENERATING and self.turn is not None:
            turn = self.turn
            turn.cancel.set()
            self._log("cancel", prompt=turn.question, draft=turn.partial, final_text=None,
                      red_flags=_hit_dicts(turn.question_check), settings=turn.settings, reason="quit")
        elif self.state is State.DRAFT and self.draft is not None:
            draft = self.draft
            self._log("cancel", prompt=draft.question, draft=draft.text, final_text=None,
                      red_flags=_hit_dicts(draft.assessment), settings=draft.turn.settings, reason="quit")
        else:
            return
        self._to_idle()

    # --- decisions on a draft --------------------------------------------------------------------

    def pending_red_flags(self, final_text: str | None = None) -> tuple[Hit, ...]:
        """Active red flags not yet acknowledged for approving ``final_text`` (default: the draft)."""
        draft = self._need_draft()
        hits = list(draft.assessment.red_flags)
        if final_text is not None and final_text != draft.text:
            hits += assess(self.rules, draft.question, final_text).red_flags
        return tuple(h for h in hits if h.rule_id not in draft.acknowledged)

    def acknowledge(self, final_text: str | None = None) -> tuple[Hit, ...]:
        """The clinician explicitly acknowledged the escalation: log it and unblock approval."""
        draft = self._need_draft()
        hits = self.pending_red_flags(final_text)
        if not hits:
            raise SessionError("there is no red flag to acknowledge on this draft.")
        checks = [draft.assessment]
        if final_text is not None and final_text != draft.text:
            checks.append(assess(self.rules, draft.question, final_text))
        self._log("acknowledge_red_flag", prompt=draft.question, draft=draft.text, final_text=final_text,
                  red_flags=_hit_dicts(*checks), settings=draft.turn.settings)
        draft.acknowledged |= {h.rule_id for h in hits}
        return hits

    def approve(self) -> str:
        """``a``: the draft as written enters the conversation."""
        draft = self._need_draft()
        if pending := self.pending_red_flags():
            raise AckRequired(pending)
        self._log("approve", prompt=draft.question, draft=draft.text, final_text=draft.text,
                  red_flags=_hit_dicts(draft.assessment), settings=draft.turn.settings)
        self._accept(draft.question, draft.text)
        return draft.text

    def edit_approve(self, text: str) -> str:
        """``e``: the clinician's edited text enters the conversation (the draft stays in the audit)."""
        draft = self._need_draft()
        text = text.strip()
        if not text:
            raise SessionError("the edited answer is empty; write the answer, or reject the draft with r.")
        if pending := self.pending_red_flags(text):
            raise AckRequired(pending)
        self._log("edit_approve", prompt=draft.question, draft=draft.text, final_text=text,
                  red_flags=_hit_dicts(draft.assessment, assess(self.rules, draft.question, text)),
                  settings=draft.turn.settings)
        self._accept(draft.question, text)
        return text

    def reject(self, reason: str) -> str:
        """``r``: the draft is discarded with a reason; returns the question (back to the input)."""
        draft = self._need_draft()
        reason = " ".join(reason.split())
        if not reason:
            raise SessionError("a rejection needs a reason; type why the draft is wrong.")
        self._log("reject", prompt=draft.question, draft=draft.text, final_text=None,
                  red_flags=_hit_dicts(draft.assessment), settings=draft.turn.settings, reason=reason)
        self._to_idle()
        return draft.question

    def regenerate(self) -> Turn:
        """``g``: log the discarded draft and start another sample for the same question."""
        draft = self._need_draft()
        self._log("regenerate", prompt=draft.question, draft=draft.text, final_text=None,
                  red_flags=_hit_dicts(draft.assessment), settings=draft.turn.settings)
        return self._start_turn(draft.question)

    # --- conversations ---------------------------------------------------------------------------

    def new_conversation(self) -> None:
        self._need(State.IDLE)
        self.conversation_id, self.conversation_title, self.history = uuid.uuid4().hex, None, []
        self.ctx_used = self._history_tokens()

    def resume(self, conversation_id: str) -> None:
        self._need(State.IDLE)
        conv = self.store.get(conversation_id)
        self.conversation_id, self.conversation_title = conv.id, conv.title
        self.history = [{"role": m.role, "content": m.content} for m in self.store.messages(conv.id)]
        self.ctx_used = self._history_tokens()

    def conversation_saved(self) -> bool:
        return self.conversation_title is not None

    def export(self, conversation_id: str, path: str | Path) -> Path:
        """Write a conversation's approved exchanges as Markdown (0640, atomic)."""
        path = Path(path).expanduser()
        if path.is_dir():
            raise SessionError(f"{path} is a directory; give a file name ending in .md.")
        atomic_write_text(path, self.store.export_markdown(conversation_id))
        return path

    def update_settings(self, settings: GenerationSettings, system_prompt: str) -> None:
        if self.state is State.GENERATING:
            raise SessionError("wait for the answer to finish (or press Esc) before changing settings.")
        if not system_prompt.strip():
            raise SessionError("the system prompt cannot be empty.")
        self.settings, self.system_prompt = settings, system_prompt.strip()
        if self.backend is not None:
            used = self._history_tokens()  # also re-prepares the prompt cache (regenerate uses it)
            if self.state is State.IDLE:
                self.ctx_used = used

    # --- internals -------------------------------------------------------------------------------

    def _accept(self, question: str, answer: str) -> None:
        if self.conversation_title is None:
            conv = self.store.create(title_from(question), conversation_id=self.conversation_id)
            self.conversation_title = conv.title
        self.store.add_exchange(self.conversation_id, question, answer, self.clinician)
        self.history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        self._to_idle()
        self.ctx_used = self._history_tokens()

    def _to_idle(self) -> None:
        self.state, self.draft, self.turn = State.IDLE, None, None

    def _history_tokens(self) -> int:
        """Tokens of the conversation so far; prepares the prompt cache for the next Enter."""
        if self.backend is None:
            return 0
        messages = [{"role": "system", "content": self.system_prompt}, *self.history]
        return len(self._prompt_cache().prepare(messages))

    def _prompt_cache(self) -> ChatPromptCache:
        """The prompt cache of the current backend (a new, empty one when the backend changed)."""
        if self._prompt is None or self._prompt.backend is not self.backend:
            self._prompt = ChatPromptCache(self.backend)
        return self._prompt

    def _need(self, state: State) -> None:
        if self.state is not state:
            raise SessionError({
                State.LOADING: "the model is still loading.",
                State.GENERATING: "an answer is being generated; wait or press Esc to cancel it.",
                State.DRAFT: "decide on the draft first: a approve, e edit, r reject, g regenerate, Esc cancel.",
                State.IDLE: "there is no draft to act on.",
            }[self.state])

    def _need_draft(self) -> Draft:
        self._need(State.DRAFT)
        assert self.draft is not None
        return self.draft

    def _log(self, action: str, *, prompt: str, draft: str, final_text: str | None, red_flags: list[dict],
             settings: GenerationSettings | None = None, reason: str | None = None) -> int:
        settings_dict = {**(settings or self.settings).to_dict(), "system_prompt": self.system_prompt}
        return self.audit.append(AuditEvent(
            clinician=self.clinician or "", model_id=self.model_id, model_sha256=self.model_sha256,
            settings=settings_dict, prompt=prompt, draft=draft, action=action, final_text=final_text,
            red_flags=red_flags, conversation_id=self.conversation_id, reason=reason))
