"""The main chat screen: transcript, streaming draft, red-flag banner, status line and input.

It only presents what the engine (:class:`~distillm_edge.chat.session.ChatSession`) decides: the
model loads in a thread worker (status line says so, the UI stays usable), each answer streams
from a thread worker that posts dataclass messages (``chat/messages.py``), and the decision keys
(a/e/r/g/Esc) call the session, which logs each decision to the audit log.

Test: ``pytest tests/chat/test_chat_app.py``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input

from distillm_edge.chat.messages import (
    DraftDelta,
    GenerationDone,
    GenerationFailed,
    ModelLoaded,
    ModelLoadFailed,
)
from distillm_edge.chat.screens.ack import AckScreen
from distillm_edge.chat.screens.clinician import ClinicianScreen
from distillm_edge.chat.screens.conversations import ConversationsScreen, export_name
from distillm_edge.chat.screens.edit import EditScreen
from distillm_edge.chat.screens.help import HelpScreen
from distillm_edge.chat.screens.prompt import PromptScreen
from distillm_edge.chat.screens.settings import SettingsScreen
from distillm_edge.chat.session import AckRequired, ChatSession, SessionError, State, Turn
from distillm_edge.chat.widgets.banner import RedFlagBanner
from distillm_edge.chat.widgets.draft import DraftView
from distillm_edge.chat.widgets.header import ChatHeader, short_model_name
from distillm_edge.chat.widgets.message import MessageView
from distillm_edge.chat.widgets.status import StatusLine

REFRESH_S = 1 / 10  # at most 10 screen updates a second while streaming
FIRST_SHOWN_WAIT_S = 0.25  # decoding pauses (at most this long) until the first text is on screen
DRAFT_KEYS = ("approve", "edit", "reject", "regenerate")
IDLE_ONLY = ("new", "conversations", "export", "settings")


class ChatScreen(Screen):
    CSS_PATH = "chat.tcss"
    FEEDBACK_S = 0.2  # Enter's visible effects wait at most this long for the first text (see _start)
    BINDINGS = [
        Binding("a", "approve", "Approve"),
        Binding("e", "edit", "Edit"),
        Binding("r", "reject", "Reject"),
        Binding("g", "regenerate", "Regenerate"),
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+n", "new", "New", priority=True),
        Binding("ctrl+l", "conversations", "Chats", priority=True),
        Binding("ctrl+x", "export", "Export", priority=True),
        Binding("ctrl+o", "settings", "Settings", priority=True),
        Binding("question_mark", "help", "Help"),
        Binding("f1", "help", "Help", show=False, priority=True),
        Binding("enter", "send", "Send", show=False, priority=True),
    ]

    def __init__(self, session: ChatSession, model_label: str, export_dir: Path):
        super().__init__()
        self.session, self.model_label, self.export_dir = session, model_label, export_dir
        self.draft_view: DraftView | None = None
        self.spare: DraftView | None = None  # the next draft's box: the idle box, or hidden while a draft is open
        self._spare_mounted = None  # its AwaitMount
        self.pending: MessageView | None = None  # the question being answered, until a decision
        self.first_shown = threading.Event()  # set when the current turn's first text is on screen
        self._feedback: tuple[Turn, str | None] | None = None  # Enter's effects not shown yet: (turn, input text)

    # --- layout ----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield ChatHeader(id="header")
        yield RedFlagBanner(id="banner")
        yield VerticalScroll(id="transcript")
        yield StatusLine(id="status")
        yield Input(placeholder="Ask a question and press Enter (? help)", id="question")
        yield Footer()

    @property
    def header(self) -> ChatHeader:
        return self.query_one(ChatHeader)

    @property
    def banner(self) -> RedFlagBanner:
        return self.query_one(RedFlagBanner)

    @property
    def status(self) -> StatusLine:
        return self.query_one(StatusLine)

    @property
    def transcript(self) -> VerticalScroll:
        return self.query_one("#transcript", VerticalScroll)

    @property
    def input(self) -> Input:
        return self.query_one("#question", Input)

    def on_mount(self) -> None:
        self.header.show(model=short_model_name(self.model_label), clinician=self.session.clinician or "")
        self.status.show("Loading the model… (you can type meanwhile; ? shows the keys)", kind="busy")
        self.input.focus()
        self._prepare_draft()
        if self.session.backend is None:
            self.load_model()
        else:
            self.post_message(ModelLoaded(self.session.backend.info.load_seconds))
        if not self.session.clinician:
            self.app.push_screen(ClinicianScreen(), self._identified)

    def _identified(self, name: str | None) -> None:
        if name:
            self.session.set_clinician(name)
            self.header.show(clinician=name)

    def _show_context(self) -> None:
        self.header.show(ctx_used=self.session.ctx_used, n_ctx=self.session.n_ctx,
                         title=self.session.conversation_title or "new conversation")

    def _idle(self, status: str, kind: str = "", question: str | None = None) -> None:
        """Back to typing: drop the draft and pending question, enable and focus the input."""
        for widget in (self.draft_view, self.pending):
            if widget is not None:
                widget.remove()
        self.draft_view = self.pending = None
        self._prepare_draft()
        self.banner.show_hits(())
        self.input.disabled = False
        self.input.cursor_blink = True
        if question is not None:
            self.input.value = question
        self.input.focus()
        self.status.show(status, kind=kind)
        self._show_context()
        self.refresh_bindings()

    # --- model loading ---------------------------------------------------------------------------

    @work(thread=True, group="load", exit_on_error=False)
    def load_model(self) -> None:
        try:
            self.session.load()
        except Exception as exc:  # shown on screen; the app stays up so the user can read it and quit
            self.post_message(ModelLoadFailed(f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(ModelLoaded(self.session.backend.info.load_seconds))

    def on_model_loaded(self, message: ModelLoaded) -> None:
        info = self.session.backend.info
        self.header.show(backend=info.backend, quant=info.dtype)
        self._show_context()
        self.status.show("Model ready. Type a question and press Enter.")
        self.refresh_bindings()

    def on_model_load_failed(self, message: ModelLoadFailed) -> None:
        self.input.disabled = True  # nothing can be answered; the error stays readable until ctrl+q
        self.status.show(f"Could not load the model: {message.error} (ctrl+q quits)", kind="error")

    # --- asking ----------------------------------------------------------------------------------

    def action_send(self) -> None:
        """Enter in the question box. The screen takes the key before the input sees it: the input
        would restart its cursor's blink, a repaint (~1 ms of UI CPU) as the model's prefill starts."""
        value = self.input.value
        try:
            turn = self.session.submit(value)
        except SessionError as exc:
            self.status.show(str(exc), kind="error")
            return
        self._start(turn, submitted=value)

    def on_input_changed(self, event: Input.Changed) -> None:
        """``?`` typed into the empty input opens the help (the input keeps printable keys to itself,
        so a binding cannot see it); a ``?`` anywhere else in a question is just text."""
        if event.input is self.input and event.value == "?":
            self.input.value = ""
            self.action_help()

    def _start(self, turn: Turn, submitted: str | None = None) -> None:
        """Start generating at once; until the first text the screen does not change.

        The model's prefill needs every core, and any screen layout meanwhile delays its first token
        by about its own UI CPU time. Enter's visible effects (the input cleared, its cursor's blink stopped,
        "Generating…" in the status line; ~3 ms of UI CPU with a layout) wait for the first text's paint
        (:meth:`on_draft_view_shown`), or ``FEEDBACK_S`` if the model is slower than that, so a
        slow model's user still sees at once that Enter took. The first text turns the idle box into
        the draft (a repaint of that box alone when it fits its line: no layout); once it is
        painted, the question above it (and the question's red-flag banner) and Enter's
        effects follow in one frame. Measured: ``benchmarks/chat_latency.py`` (closing notes of
        issue #10). The input and footer give the keys to the draft when it is complete
        (:meth:`on_generation_done`). Esc cancels throughout (the input has no Esc key).
        """
        self.first_shown = threading.Event()
        self.generate(turn, self.first_shown)
        if self.draft_view is not None:  # regenerate: the discarded draft goes now
            self.draft_view.remove()
            self.draft_view = None
        self._feedback = (turn, submitted)
        self.set_timer(self.FEEDBACK_S, lambda: self._show_generating(turn))

    def _show_generating(self, turn: Turn) -> None:
        """Enter's visible effects for ``turn``, once (a no-op if already shown or for an older turn)."""
        if self._feedback is None or self._feedback[0] is not turn:
            return
        submitted, self._feedback = self._feedback[1], None
        self.input.cursor_blink = False  # no repaint every 0.5 s while the model decodes (a repaint itself)
        if submitted is not None and self.input.value == submitted:  # keep anything typed since
            self.input.value = ""
        notice = (f"History trimmed: the {turn.dropped} oldest messages are left out to fit the "
                  f"{self.session.n_ctx}-token context." if turn.dropped else "")
        self.status.show("Generating a draft… Esc cancels.", notice=notice, kind="busy")

    def _prepare_draft(self) -> None:
        """Mount the next draft's box at the end of the transcript while nothing is generating, so the
        first token only fills it in (composing and mounting it cost the first paint ~3 ms of UI CPU).
        While no draft is open it shows, as the idle box, where the next answer will appear: it is laid
        out already, so a first text that fits its line repaints it alone (no screen layout). Made
        while a draft is open (for a regenerated answer), it waits hidden."""
        if self.spare is None:
            self.spare = DraftView()
            self._spare_mounted = self.transcript.mount(self.spare)
        self.spare.display = self.draft_view is None

    async def _show_turn(self, turn: Turn) -> None:
        """The first text (or the end) of ``turn`` arrived: the next draft's box becomes its draft (no
        layout when it was showing as the idle box); the question above it follows in the next frame
        (:meth:`on_draft_view_shown`)."""
        self._prepare_draft()  # shows the box (no draft is open); makes it if the turn started before it was made
        if not self.spare.is_mounted:
            await self._spare_mounted
        self.draft_view, self.spare = self.spare, None
        self.draft_view.show_turn(turn)

    async def _mount_question(self, turn: Turn) -> None:
        if self.pending is None and self.draft_view is not None:  # a regenerated draft keeps its question
            self.pending = MessageView("user", turn.question)
            await self.transcript.mount(self.pending, before=self.draft_view)

    async def on_draft_view_shown(self, message: DraftView.Shown) -> None:
        """The first text is on screen: the question appears above the draft, with Enter's effects and
        a red flag in the question; decoding goes on once that frame is painted (laid out alone, it
        takes no core from the model)."""
        if message.turn is not self.session.turn:
            return
        first_shown = self.first_shown
        await self._mount_question(message.turn)
        self._show_generating(message.turn)
        if message.turn.question_check.red_flags and self.session.state is State.GENERATING:
            self.banner.show_hits(message.turn.question_check.red_flags)
        self.call_after_refresh(first_shown.set)

    @work(thread=True, group="generate", exit_on_error=False)
    def generate(self, turn: Turn, first_shown: threading.Event) -> None:
        """Stream the draft. The first text is posted at once, and decoding waits (up to
        ``FIRST_SHOWN_WAIT_S``) until the screen shows it and the question above it: that frame's
        layout then has the cores to itself. Later text is posted at most every ``REFRESH_S`` (pieces that arrive
        sooner are joined), so rendering never takes the CPU the model needs."""
        pending, last_post = "", 0.0
        try:
            for delta in self.session.stream(turn):
                pending += delta.text
                now = time.perf_counter()
                if now - last_post >= REFRESH_S:
                    self.post_message(DraftDelta(turn, pending))
                    if not last_post:
                        first_shown.wait(FIRST_SHOWN_WAIT_S)
                    pending, last_post = "", now
        except Exception as exc:  # shown on screen; the session drops the turn
            self.post_message(GenerationFailed(turn, f"{type(exc).__name__}: {exc}"))
            return
        if pending:
            self.post_message(DraftDelta(turn, pending))
        self.post_message(GenerationDone(turn))

    async def on_draft_delta(self, message: DraftDelta) -> None:
        if message.turn is not self.session.turn:
            return
        if self.draft_view is None:
            await self._show_turn(message.turn)
        self.draft_view.append(message.text)
        self.transcript.scroll_end(animate=False)

    async def on_generation_done(self, message: GenerationDone) -> None:
        if message.turn is not self.session.turn:
            return
        self._show_generating(message.turn)  # an answer faster than FEEDBACK_S with no text
        draft = self.session.complete(message.turn)
        if draft is None:
            self._idle("Cancelled; the partial draft is in the audit log. The question is back in the input.",
                       question=message.turn.question)
            return
        self.input.disabled = True  # the keys now decide on the draft (before any await: a key may follow)
        self.transcript.focus()
        if self.draft_view is None:  # an empty draft: nothing was streamed
            await self._show_turn(message.turn)
            await self._mount_question(message.turn)
            if self.session.draft is not draft:  # a key decided on it meanwhile
                return
        result = message.turn.result
        self.draft_view.finish(result.finish_reason, result.completion_tokens)
        self.banner.show_hits(draft.assessment.red_flags)
        self.status.show("RED FLAG: a, then type ack, to approve · e edit · r reject · g regenerate"
                         if draft.assessment.requires_ack else
                         "Draft ready: a approve · e edit · r reject · g regenerate · Esc cancel", kind="busy")
        self._show_context()
        self.refresh_bindings()
        self._prepare_draft()  # the box a regenerated answer will stream into, made while the clinician reads

    def on_generation_failed(self, message: GenerationFailed) -> None:
        if message.turn is not self.session.turn:
            return
        self._feedback = None  # _idle sets the input and status
        self.session.failed(message.turn)
        self._idle(f"Generation failed: {message.error}", kind="error", question=message.turn.question)

    # --- decisions -------------------------------------------------------------------------------

    def _approved(self, question: str, answer: str) -> None:
        for widget in (self.draft_view, self.pending):
            if widget is not None:
                widget.remove()
        self.draft_view = self.pending = None
        self._prepare_draft()
        self.transcript.mount(MessageView("user", question), before=self.spare)  # the next draft stays last
        self.transcript.mount(MessageView("assistant", answer, self.session.clinician or ""), before=self.spare)
        self.transcript.scroll_end(animate=False)
        self._idle(f"Approved; saved to “{self.session.conversation_title}”.")

    def _acknowledge_then(self, hits, final_text: str | None, then) -> None:
        def done(confirmed: bool | None) -> None:
            if not confirmed:
                self.status.show("Not approved: a red-flagged draft needs the acknowledgment.", kind="error")
                return
            self.session.acknowledge(final_text)
            self.banner.show_hits(self.session.draft.assessment.red_flags, acknowledged=True)
            then()

        self.app.push_screen(AckScreen(tuple(hits)), done)

    def action_approve(self) -> None:
        question = self.session.draft.question
        try:
            answer = self.session.approve()
        except AckRequired as exc:
            self._acknowledge_then(exc.hits, None, self.action_approve)
            return
        self._approved(question, answer)

    def action_edit(self) -> None:
        def save(text: str | None) -> None:
            if text is None:
                return
            question = self.session.draft.question
            try:
                answer = self.session.edit_approve(text)
            except AckRequired as exc:
                self._acknowledge_then(exc.hits, text, lambda: save(text))
                return
            except SessionError as exc:
                self.status.show(str(exc), kind="error")
                return
            self._approved(question, answer)

        self.app.push_screen(EditScreen(self.session.draft.text), save)

    def action_reject(self) -> None:
        def done(reason: str | None) -> None:
            if reason:
                question = self.session.reject(reason)
                self._idle("Rejected (logged with your reason). The question is back in the input.",
                           question=question)

        self.app.push_screen(PromptScreen("Reject the draft", "Why is it wrong? The reason is logged with your name.",
                                          placeholder="reason", empty_error="A rejection needs a reason."), done)

    def action_regenerate(self) -> None:
        try:
            turn = self.session.regenerate()
        except SessionError as exc:
            self.status.show(str(exc), kind="error")
            return
        self._start(turn)

    def action_cancel(self) -> None:
        if self.session.state is State.GENERATING:
            self._feedback = None  # "Cancelling…" now; the question stays in the input, then _idle
            self.session.cancel()
            self.first_shown.set()  # a worker waiting for the first text to show stops at once
            self.status.show("Cancelling…", kind="busy")
            return
        question = self.session.cancel()
        self._idle("Draft cancelled (logged). The question is back in the input.", question=question)

    # --- conversations, settings, help -----------------------------------------------------------

    def _show_conversation(self) -> None:
        self.transcript.remove_children()  # the next draft's box too: a new one goes last
        self.spare = None
        if self.session.conversation_saved():
            for msg in self.session.store.messages(self.session.conversation_id):
                self.transcript.mount(MessageView(msg.role, msg.content, msg.clinician))
        self._prepare_draft()
        self.transcript.scroll_end(animate=False)
        self._show_context()

    def action_new(self) -> None:
        self.session.new_conversation()
        self._show_conversation()
        self.status.show("New conversation.")

    def action_conversations(self) -> None:
        def done(conversation_id: str | None) -> None:
            if self.session.conversation_saved() and all(
                    c.id != self.session.conversation_id for c in self.session.store.list()):
                self.session.new_conversation()  # the open conversation was deleted
                self._show_conversation()
                self.status.show("The open conversation was deleted; this is a new one.")
            if conversation_id:
                self.session.resume(conversation_id)
                self._show_conversation()
                self.status.show(f"Resumed “{self.session.conversation_title}”.")
            self._show_context()  # the open conversation may have been renamed
            self.input.focus()

        self.app.push_screen(ConversationsScreen(self.session, self.export_dir), done)

    def action_export(self) -> None:
        if not self.session.conversation_saved():
            self.status.show("Nothing to export yet: a conversation is saved at its first approved answer.",
                             kind="error")
            return
        default = self.export_dir / export_name(self.session.conversation_title, self.session.conversation_id)

        def done(value: str | None) -> None:
            if value:
                path = self.session.export(self.session.conversation_id, value)
                self.status.show(f"Exported the approved answers to {path}")

        self.app.push_screen(PromptScreen("Export to Markdown (approved answers only)", "File to write:",
                                          value=str(default)), done)

    def action_settings(self) -> None:
        def done(result) -> None:
            if result:
                self.session.update_settings(*result)
                s = self.session.settings
                self.status.show(f"Settings saved: temperature {s.temperature}, top-p {s.top_p}, "
                                 f"max tokens {s.max_new_tokens}.")
                self._show_context()

        self.app.push_screen(SettingsScreen(self.session.settings, self.session.system_prompt), done)

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "send":  # Enter elsewhere goes to the focused widget
            return self.focused is self.input and not self.input.disabled
        state = self.session.state
        if action in DRAFT_KEYS:
            return state is State.DRAFT
        if action == "cancel":
            return state in (State.GENERATING, State.DRAFT)
        if action in IDLE_ONLY:  # hidden while a draft is open, so the footer lists the decision keys
            return state is State.IDLE
        return True
