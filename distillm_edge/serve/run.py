"""`distillm-edge serve`: open the model, the safety layer and the audit log, then run uvicorn.

Read top to bottom: :func:`open_model` (an embedded name runs its shipped GGUF on llama.cpp, as
``chat`` does) → :func:`build_service` (engine with N slots, red-flag rules, audit log, model
identity) → :func:`run` (uvicorn on the configured host/port; SIGTERM/Ctrl-C drain in-flight
requests for ``shutdown_grace_s``, then cancel the rest; every exchange is in the audit log).

Run: ``distillm-edge serve --model smollm2-135m-instruct --parallel 4``.
Test: ``pytest tests/serve``.
"""

from __future__ import annotations

import logging

from rich.console import Console

from distillm_edge.serve.app import Service, create_app
from distillm_edge.serve.config import ServeConfig
from distillm_edge.serve.engine import Engine
from distillm_edge.serve.exchange import Supervisor

GGUF_OWN_CTX = 512  # the backend's own llama.cpp context only tokenizes here; the slots have their own


def backend_kind(spec: str, backend: str) -> str:
    if backend != "auto":
        return backend
    from distillm_edge.models.sources import resolve

    return {"gguf": "gguf", "embedded": "gguf", "onnx_dir": "onnx"}.get(resolve(spec).kind, "torch")


def open_model(cfg: ServeConfig):
    from distillm_edge.backends import open_backend

    kind = backend_kind(cfg.model, cfg.backend)
    options = {"threads": cfg.threads} if cfg.threads else {}
    if kind == "gguf":
        options["n_ctx"] = GGUF_OWN_CTX
    return open_backend(cfg.model, backend=kind, **options)


def build_service(cfg: ServeConfig, backend=None) -> Service:
    from distillm_edge.safety.audit import AuditLog, default_audit_path, model_identity
    from distillm_edge.safety.redflags import load_rules

    rules = load_rules(cfg.rules)  # a bad rules file fails before the model loads
    backend = backend if backend is not None else open_model(cfg)
    engine = Engine(backend, cfg.parallel, cfg.queue, cfg.ctx_per_slot, cfg.threads)
    audit = AuditLog(cfg.audit_db or default_audit_path())
    model_id, sha256 = model_identity(backend)
    return Service(cfg, engine, Supervisor(engine, rules, audit, model_id, sha256, cfg.block_red_flags))


def uvicorn_config(cfg: ServeConfig, app, log_level: str = "info"):
    import uvicorn

    return uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=log_level, access_log=False,
                          server_header=False, timeout_graceful_shutdown=cfg.shutdown_grace_s, lifespan="on")


def run(cfg: ServeConfig, console: Console | None = None) -> None:
    import uvicorn

    console = console or Console(stderr=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    svc = build_service(cfg)
    audit_path = svc.supervisor.audit.path
    console.print(
        f"serving [bold]{svc.model_id}[/] ({svc.engine.mode}, {cfg.parallel} slots, queue {cfg.queue}) on "
        f"http://{cfg.host}:{cfg.port}/v1 — API key {'required' if cfg.api_key else 'off (loopback only)'}; "
        f"red flags {'block' if cfg.block_red_flags else 'reported'}; audit log {audit_path}", highlight=False)
    console.print("every answer is a DRAFT for a clinician to review (responses carry draft: true)", highlight=False)
    uvicorn.Server(uvicorn_config(cfg, create_app(svc))).run()
