"""Security of the server: bind policy, API key, body and prompt limits, error shape, CORS off.

- the policy: loopback binds need no key; any other address (0.0.0.0, a LAN IP, a host name)
  is refused without ``--api-key``;
- the middleware on a running server with a key: 401 (OpenAI-shaped, ``WWW-Authenticate``) with no
  or a wrong bearer token, 200 with the right one; ``/healthz`` stays open;
- oversize bodies (declared or chunked) get 413; malformed JSON, wrong types, unsupported options,
  a too-large ``max_tokens`` and a too-long prompt get 400 naming the field; unknown routes 404;
  all as ``{"error": {...}}`` JSON without stack traces, and a crashing backend gives a clean 500;
- no CORS headers, even for a browser preflight.

Run: ``pytest tests/serve/test_security.py`` (seconds; scripted backend).
"""

from __future__ import annotations

import httpx
import pytest
from serve_helpers import ScriptedBackend, running_server

from distillm_edge.errors import UserError
from distillm_edge.serve.config import ServeConfig, check_bind, is_loopback
from distillm_edge.serve.security import bearer_ok

KEY = "s3cret-key-for-tests"


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
                                       ("localhost", True), ("0.0.0.0", False), ("::", False),
                                       ("192.168.1.20", False), ("clinic-server.local", False)])
def test_loopback_policy(host, loop):
    assert is_loopback(host) is loop
    if loop:
        check_bind(host, None)
    else:
        with pytest.raises(UserError, match="requires an API key"):
            check_bind(host, None)
        with pytest.raises(UserError, match="--api-key"):
            ServeConfig(host=host)
        check_bind(host, KEY)
        assert ServeConfig(host=host, api_key=KEY).api_key == KEY


def test_bearer_compare():
    assert bearer_ok(f"Bearer {KEY}", KEY) and bearer_ok(f"bearer  {KEY} ", KEY)
    for header in (None, "", KEY, f"Basic {KEY}", f"Bearer {KEY}x", "Bearer ", f"Bearer {KEY[:-1]}"):
        assert not bearer_ok(header, KEY)


def test_config_errors_name_the_option():
    with pytest.raises(UserError, match="--parallel"):
        ServeConfig(parallel=0)
    with pytest.raises(UserError, match="--backend"):
        ServeConfig(backend="tensorrt")
    with pytest.raises(UserError, match="ctx-per-slot"):
        ServeConfig(ctx_per_slot=512)
    with pytest.raises(UserError, match="at least 8"):
        ServeConfig(api_key="short")


def assert_error(r: httpx.Response, status: int, text: str = "") -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and "Traceback" not in r.text
    assert text in err["message"]
    return err


def test_api_key_required_by_the_middleware(tmp_path):
    with running_server(ScriptedBackend(), tmp_path, api_key=KEY) as (url, _):
        body = {"messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"{url}/v1/chat/completions", json=body)
        err = assert_error(r, 401, "API key")
        assert err["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"
        assert_error(httpx.post(f"{url}/v1/chat/completions", json=body,
                                headers={"Authorization": "Bearer wrong-key-123"}), 401)
        assert_error(httpx.get(f"{url}/v1/models"), 401)
        assert_error(httpx.get(f"{url}/metrics"), 401)
        ok = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["draft"] is True
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_bad_requests_get_4xx_json(tmp_path):
    with running_server(ScriptedBackend(), tmp_path, max_body_bytes=4096, max_prompt_tokens=300) as (url, _):
        chat = f"{url}/v1/chat/completions"
        assert_error(httpx.post(chat, content=b"x" * 5000), 413, "exceeds the limit")

        def chunked():
            for _ in range(10):
                yield b"y" * 1000

        assert_error(httpx.post(chat, content=chunked()), 413)  # no Content-Length: counted while reading
        assert_error(httpx.post(chat, content=b'{"messages": [{"role": "user", "content": "hi"}'), 400, "not valid JSON")
        assert_error(httpx.post(chat, content=b"[1, 2]"), 400, "JSON object")
        assert_error(httpx.post(chat, json={}), 400, "messages")
        assert_error(httpx.post(chat, json={"messages": "hello"}), 400, "messages")
        assert_error(httpx.post(chat, json={"messages": [{"role": "wizard", "content": "x"}]}), 400, "role")
        msg = [{"role": "user", "content": "hi"}]
        assert assert_error(httpx.post(chat, json={"messages": msg, "n": 3}), 400, "n=1")["param"] == "n"
        assert_error(httpx.post(chat, json={"messages": msg, "temperature": -1}), 400, "temperature")
        assert_error(httpx.post(chat, json={"messages": msg, "tools": [{"type": "function"}]}), 400, "tools")
        err = assert_error(httpx.post(chat, json={"messages": msg, "max_tokens": 100_000}), 400, "limit")
        assert err["param"] == "max_tokens"
        long = [{"role": "user", "content": "z" * 400}]  # 400+ byte tokens > max_prompt_tokens=300
        err = assert_error(httpx.post(chat, json={"messages": long}), 400, "tokens")
        assert err["code"] == "context_length_exceeded"
        assert_error(httpx.post(f"{url}/v1/completions", json={"prompt": ["a", "b"]}), 400, "one prompt")
        assert_error(httpx.post(f"{url}/v1/completions", json={"prompt": ""}), 400, "empty")
        assert_error(httpx.get(f"{url}/v1/nothing-here"), 404)
        assert_error(httpx.get(chat), 405)


def test_crash_is_a_clean_500_and_no_cors(tmp_path):
    backend = ScriptedBackend()

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail /home/user/model.bin")
        yield

    backend.stream = broken
    with running_server(backend, tmp_path) as (url, svc):
        r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                       headers={"Origin": "https://evil.example"})
        assert_error(r, 500, "generation failed")
        assert "secret" not in r.text and "access-control-allow-origin" not in r.headers
        pre = httpx.options(f"{url}/v1/chat/completions", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert pre.status_code in (404, 405) and "access-control-allow-origin" not in pre.headers
        assert svc.engine.admitted == 0  # the failed request gave its place back
