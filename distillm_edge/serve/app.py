"""The FastAPI app of `distillm-edge serve`: OpenAI-compatible routes over one supervised engine.

| Method | Path                   | What                                                        |
|--------|------------------------|-------------------------------------------------------------|
| POST   | `/v1/chat/completions` | chat, streamed (server-sent events) or not                  |
| POST   | `/v1/completions`      | plain-text completion, streamed or not                      |
| GET    | `/v1/models`           | the one loaded model                                        |
| GET    | `/healthz`             | liveness and slot usage (no API key needed)                 |
| GET    | `/metrics`             | Prometheus text: requests, tokens, latency, queue depth     |

A request is validated and tokenized (limits: prompt tokens, ``max_tokens``), admitted into a slot
or the bounded queue (else 429 with ``Retry-After``), then run by :class:`Supervisor` in a worker
thread (never on the event loop). A client that disconnects sets its cancel event; the worker
stops at the next token and frees the slot. At shutdown (uvicorn waits up to the grace period for
in-flight requests, then cancels them), workers are joined before the audit log is closed.

Test: ``pytest tests/serve``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from distillm_edge.backends.generate import GenerationSettings
from distillm_edge.errors import UserError
from distillm_edge.serve import schemas
from distillm_edge.serve.config import ServeConfig
from distillm_edge.serve.engine import Engine
from distillm_edge.serve.exchange import Outcome, Prepared, Supervisor, chat_prompt_text
from distillm_edge.serve.metrics import Metrics
from distillm_edge.serve.security import Guard

log = logging.getLogger("distillm_edge.serve")


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.param, self.code, self.type, self.headers = status, param, code, type_, headers

    def response(self) -> JSONResponse:
        return JSONResponse(schemas.error_body(str(self), self.type, self.param, self.code), self.status,
                            headers=self.headers)


class Service:
    """Everything one app serves with: config, engine, supervisor, metrics, in-flight workers."""

    def __init__(self, cfg: ServeConfig, engine: Engine, supervisor: Supervisor):
        self.cfg, self.engine, self.supervisor = cfg, engine, supervisor
        self.backend = engine.backend
        self.model_id = supervisor.model_id
        self.metrics = Metrics(engine)
        self.workers: set[threading.Thread] = set()
        self.cancels: set[threading.Event] = set()
        self.stopping = False
        self.latency_ema = 1.0

    # --- request preparation (worker thread: tokenization is CPU work) ----------------------------

    def prepare(self, kind: str, body: schemas.ChatRequest | schemas.CompletionRequest) -> Prepared:
        cfg = self.cfg
        max_tokens = body.requested_max_tokens() or cfg.default_max_tokens
        if max_tokens > cfg.max_tokens_limit:
            raise ApiError(400, f"max_tokens {max_tokens} exceeds this server's limit of {cfg.max_tokens_limit}",
                           param="max_tokens")
        if kind == "chat":
            messages = body.chat_messages()
            try:
                ids = self.backend.chat_ids(messages)
            except UserError as exc:
                raise ApiError(400, str(exc), param="messages") from None
            prompt_text, question = chat_prompt_text(messages), body.question()
        else:
            ids = self.backend.tokenize(body.prompt)
            prompt_text = question = body.prompt
        limit = min(cfg.max_prompt_tokens, self.engine.ctx_per_slot - max_tokens)
        if not ids:
            raise ApiError(400, "the prompt is empty", param="messages" if kind == "chat" else "prompt")
        if len(ids) > limit:
            raise ApiError(400, f"the prompt has {len(ids)} tokens; this server takes at most {limit} with "
                                f"max_tokens={max_tokens}", param="messages" if kind == "chat" else "prompt",
                           code="context_length_exceeded")
        defaults = GenerationSettings()
        try:
            settings = GenerationSettings(
                max_new_tokens=max_tokens,
                temperature=defaults.temperature if body.temperature is None else body.temperature,
                top_p=defaults.top_p if body.top_p is None else body.top_p,
                seed=body.seed or 0, stop=tuple(body.stop or ()))
        except UserError as exc:
            raise ApiError(400, str(exc)) from None
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        return Prepared(kind, f"{prefix}-{uuid.uuid4().hex}", int(time.time()), prompt_text, question, ids,
                        settings, (body.user or "").strip() or "api")

    # --- running ---------------------------------------------------------------------------------

    def start(self, prep: Prepared, cancel: threading.Event, post) -> None:
        """Run the exchange in a worker thread; ``post(kind, value)`` is called on the event loop."""
        loop = asyncio.get_running_loop()

        def to_loop(kind, value):
            try:
                loop.call_soon_threadsafe(post, kind, value)
            except RuntimeError:  # the event loop is gone (hard shutdown): stop generating
                cancel.set()

        def work():
            try:
                outcome = self.supervisor.run(prep, cancel, lambda text: to_loop("delta", text))
                to_loop("done", outcome)
            except Exception as exc:
                log.exception("generation failed for %s", prep.rid)
                to_loop("error", exc)
            finally:
                self.engine.release()
                self.cancels.discard(cancel)
                self.workers.discard(threading.current_thread())

        thread = threading.Thread(target=work, name=f"gen-{prep.rid[-8:]}", daemon=True)
        self.cancels.add(cancel)
        self.workers.add(thread)
        thread.start()

    def record(self, endpoint: str, status: int, started: float, outcome: Outcome | None) -> None:
        m = self.metrics
        m.requests.labels(endpoint, str(status)).inc()
        elapsed = time.perf_counter() - started
        m.latency.labels(endpoint).observe(elapsed)
        if outcome is not None:
            self.latency_ema = 0.8 * self.latency_ema + 0.2 * elapsed
            m.tokens.labels("prompt").inc(outcome.result.prompt_tokens)
            m.tokens.labels("completion").inc(len(outcome.result.token_ids))
            if outcome.result.ttft_s:
                m.ttft.labels(endpoint).observe(outcome.result.ttft_s)
            if any(h["suppressed"] is None for h in outcome.red_flags):
                m.red_flags.labels("blocked" if outcome.blocked else "shown").inc()

    def retry_after(self) -> str:
        waves = max(1, math.ceil(self.engine.capacity / self.engine.slots))
        return str(max(1, math.ceil(self.latency_ema * waves)))

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel what is still running, wait for the workers (they write their audit rows), close."""
        self.stopping = True
        for cancel in list(self.cancels):
            cancel.set()
        deadline = time.monotonic() + timeout
        for thread in list(self.workers):
            thread.join(max(0.0, deadline - time.monotonic()))
        self.engine.close()
        self.supervisor.audit.close()


def _ext(outcome: Outcome) -> dict:
    return schemas.supervision(outcome.red_flags, outcome.blocked, outcome.audit_id)


def _validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors()[0] if exc.errors() else {}
    loc = ".".join(str(p) for p in first.get("loc", ()))
    message = first.get("msg", "invalid request").removeprefix("Value error, ")
    return ApiError(400, f"{loc}: {message}" if loc else message, param=loc or None)


async def _parse(request: Request, model: type[BaseModel]):
    """The JSON body as ``model`` (any Content-Type, as OpenAI-compatible servers accept)."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None


async def _handle(svc: Service, request: Request, kind: str) -> object:
    started = time.perf_counter()
    endpoint = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    try:
        if svc.stopping:
            raise ApiError(503, "the server is shutting down", type_="server_error")
        body = await _parse(request, schemas.ChatRequest if kind == "chat" else schemas.CompletionRequest)
        prep = await run_in_threadpool(svc.prepare, kind, body)
        if not svc.engine.admit():
            raise ApiError(429, f"all {svc.engine.slots} slots and {svc.engine.capacity - svc.engine.slots} queue "
                                "places are taken; retry later", type_="server_overloaded_error",
                           code="queue_full", headers={"Retry-After": svc.retry_after()})
    except ApiError as exc:
        svc.record(endpoint, exc.status, started, None)
        return exc.response()
    cancel = threading.Event()
    events: asyncio.Queue = asyncio.Queue()
    svc.start(prep, cancel, lambda k, v: events.put_nowait((k, v)))
    if body.stream:
        return StreamingResponse(_sse(svc, prep, body, events, cancel, endpoint, started),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def watch_disconnect():
        while (await request.receive())["type"] != "http.disconnect":
            pass
        cancel.set()

    watcher = asyncio.create_task(watch_disconnect())
    try:
        while True:
            what, value = await events.get()
            if what != "delta":
                break
    finally:
        watcher.cancel()
    if what == "error":
        svc.record(endpoint, 500, started, None)
        return ApiError(500, "generation failed (see the server log)", type_="server_error").response()
    outcome: Outcome = value
    if outcome.finish == "cancelled":
        svc.record(endpoint, 503, started, outcome)
        return ApiError(503, "generation was cancelled (server shutting down)", type_="server_error").response()
    svc.record(endpoint, 200, started, outcome)
    use = schemas.usage(outcome.result.prompt_tokens, len(outcome.result.token_ids))
    finish = schemas.FINISH[outcome.finish]
    if kind == "chat":
        return JSONResponse(schemas.chat_response(prep.rid, prep.created, svc.model_id, outcome.text, finish,
                                                  use, _ext(outcome)))
    return JSONResponse(schemas.completion_response(prep.rid, prep.created, svc.model_id, outcome.text, finish,
                                                    use, _ext(outcome)))


def _sse_line(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _sse(svc: Service, prep: Prepared, body, events: asyncio.Queue, cancel: threading.Event,
               endpoint: str, started: float):
    chat = prep.kind == "chat"
    model = svc.model_id

    def piece(text: str, finish: str | None = None, ext: dict | None = None) -> dict:
        if chat:
            return schemas.chat_chunk(prep.rid, prep.created, model, {"content": text} if text else {}, finish, ext)
        return schemas.completion_response(prep.rid, prep.created, model, text, finish, None, ext)

    status, outcome = 499, None  # 499: the client went away before the end
    try:
        if chat:
            yield _sse_line(schemas.chat_chunk(prep.rid, prep.created, model, {"role": "assistant", "content": ""}, None))
        while True:
            what, value = await events.get()
            if what == "delta":
                yield _sse_line(piece(value))
                continue
            if what == "error":
                status = 500
                yield _sse_line(schemas.error_body("generation failed (see the server log)", "server_error"))
            else:
                outcome, status = value, 200
                yield _sse_line(piece("", schemas.FINISH[outcome.finish], _ext(outcome)))
                if body.include_usage():
                    use = schemas.usage(outcome.result.prompt_tokens, len(outcome.result.token_ids))
                    obj = "chat.completion.chunk" if chat else "text_completion"
                    yield _sse_line(schemas.usage_chunk(prep.rid, prep.created, model, obj, use))
            yield "data: [DONE]\n\n"
            break
    finally:
        cancel.set()  # the client left (or the stream ended): stop generating, free the slot
        svc.record(endpoint, status, started, outcome)


def create_app(svc: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await run_in_threadpool(svc.shutdown)

    app = FastAPI(title="distillm-edge", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.service = svc

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(schemas.error_body(str(exc.detail), code=str(exc.status_code)), exc.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(schemas.error_body("internal server error (see the server log)", "server_error"), 500)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await _handle(svc, request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _handle(svc, request, "completion")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": svc.model_id, "object": "model", "created": 0,
                                            "owned_by": "distillm-edge"}]}

    @app.get("/healthz")
    async def healthz():
        failure = svc.engine.scheduler.failure if svc.engine.scheduler is not None else None
        if failure:  # the llama.cpp decode loop stopped: every generation now fails
            return JSONResponse({"status": "error", "error": "generation engine stopped (see the server log)"}, 503)
        return {"status": "stopping" if svc.stopping else "ok", "model": svc.model_id,
                "slots": svc.engine.slots, "slots_busy": svc.engine.running, "queue_depth": svc.engine.queued}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Guard(app, svc.cfg.api_key, svc.cfg.max_body_bytes)
