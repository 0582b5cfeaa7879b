"""The server's guard, checked before any route runs: API key and request body size.

:class:`Guard` is plain ASGI middleware (no buffering of responses, so streams are untouched):

- with an API key, every path but ``/healthz`` needs ``Authorization: Bearer <key>``; the token is
  compared with :func:`hmac.compare_digest` (constant time), and a miss gets an OpenAI-shaped 401;
- a body larger than ``max_body_bytes`` gets 413, whether it declares its length or not (the
  body is read here up to the cap, then handed to the app).

The bind policy (:func:`~distillm_edge.serve.config.check_bind`) makes the key mandatory off
loopback. CORS is off: no CORS middleware is installed, so browsers on other origins cannot read
responses.

Test: ``pytest tests/serve/test_security.py``.
"""

from __future__ import annotations

import hmac
import json

from distillm_edge.serve.schemas import error_body

OPEN_PATHS = frozenset({"/healthz"})


def bearer_ok(header: str | None, api_key: str) -> bool:
    """Does an ``Authorization`` header carry ``Bearer <api_key>``? (constant-time comparison)"""
    if not header:
        return False
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode("utf-8"), api_key.encode("utf-8"))


async def send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class Guard:
    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.api_key, self.max_body = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if self.api_key and scope["path"] not in OPEN_PATHS:
            auth = headers.get(b"authorization", b"").decode("latin-1")
            if not bearer_ok(auth, self.api_key):
                return await send_json(send, 401, error_body(
                    "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                    code="invalid_api_key"), [(b"www-authenticate", b"Bearer")])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await send_json(send, 400, error_body("the Content-Length header is not a number"))
            if size > self.max_body:
                return await send_json(send, 413, error_body(
                    f"request body of {size} bytes exceeds the limit of {self.max_body} bytes",
                    code="request_too_large"))
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_body:
                return await send_json(send, 413, error_body(
                    f"request body exceeds the limit of {self.max_body} bytes", code="request_too_large"))
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
