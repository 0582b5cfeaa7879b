"""The OpenAI-compatible API through the official ``openai`` client against a real running server.

- a tiny random Llama (torch, real tokenizer and chat template): chat and completions, streamed
  and not; ``draft: true`` on every response and chunk; usage; ``/v1/models``; every exchange
  appended to the audit log, which verifies;
- a scripted backend (exact text): red flags reported in the extension field; ``--block-red-flags``
  withholds a draft (question or answer) with ``finish_reason: content_filter`` and logs
  ``api_blocked``; ``/metrics`` counts requests, tokens and latency.

Run: ``pytest tests/serve/test_api.py`` (seconds).
"""

from __future__ import annotations

import httpx
import openai
import pytest
from serve_helpers import ScriptedBackend, running_server

from distillm_edge.safety.audit import AuditLog

CHEST = "I have crushing chest pain spreading to my left arm and I am sweating."


def audit_rows(svc):
    log = AuditLog(svc.cfg.audit_db)
    try:
        assert log.verify().ok
        return list(log.rows())
    finally:
        log.close()


@pytest.fixture(scope="module")
def tiny_server(tiny_backend, tmp_path_factory):
    with running_server(tiny_backend, tmp_path_factory.mktemp("serve")) as (url, svc):
        yield url, svc


def test_openai_client_chat_and_completions(tiny_server):
    url, svc = tiny_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused-on-loopback")
    [model] = client.models.list().data
    assert model.id == svc.model_id and model.id.startswith("torch:")

    chat = client.chat.completions.create(model=model.id, messages=[{"role": "user", "content": "What is anemia?"}],
                                          max_tokens=8, temperature=0)
    assert chat.object == "chat.completion" and chat.choices[0].finish_reason in ("stop", "length")
    assert chat.draft is True and chat.red_flags == [] and chat.blocked is False and chat.audit_id >= 1
    assert 1 <= chat.usage.completion_tokens <= 8 and chat.usage.prompt_tokens > 5
    again = client.chat.completions.create(model=model.id, messages=[{"role": "user", "content": "What is anemia?"}],
                                           max_tokens=8, temperature=0)
    assert again.choices[0].message.content == chat.choices[0].message.content  # greedy is reproducible

    chunks = list(client.chat.completions.create(
        model=model.id, messages=[{"role": "user", "content": "What is anemia?"}], max_tokens=8, temperature=0,
        stream=True, stream_options={"include_usage": True}))
    assert all(c.draft is True for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat.choices[0].message.content  # streamed == not streamed
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].red_flags == [] and final[0].audit_id > chat.audit_id
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens

    done = client.completions.create(model=model.id, prompt="Hypertension is", max_tokens=5, temperature=0)
    streamed = list(client.completions.create(model=model.id, prompt="Hypertension is", max_tokens=5,
                                              temperature=0, stream=True))
    assert done.object == "text_completion" and done.draft is True
    assert "".join(c.choices[0].text for c in streamed) == done.choices[0].text

    rows = audit_rows(svc)
    assert [r["action"] for r in rows] == ["api_response"] * 5
    assert rows[0]["model_id"] == svc.model_id and rows[0]["settings"]["endpoint"] == "chat"
    assert rows[0]["final_text"] == chat.choices[0].message.content and rows[0]["clinician"] == "api"
    assert rows[-1]["prompt"] == "Hypertension is" and rows[-1]["conversation_id"] == streamed[0].id


def test_red_flags_reported_and_blocked(tmp_path):
    answer = "Call an ambulance now: crushing chest pain that spreads to the arm can be a heart attack."
    with running_server(ScriptedBackend(answer), tmp_path / "report") as (url, svc):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x")
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": CHEST}], user="dr-who")
        assert r.choices[0].message.content == answer and r.blocked is False
        sources = {h["source"] for h in r.red_flags if h["suppressed"] is None}
        assert sources == {"question", "draft"}
        assert any(h["rule_id"].startswith("cardiac.") for h in r.red_flags)
        [row] = audit_rows(svc)
        assert row["action"] == "api_response" and row["clinician"] == "dr-who" and row["red_flags"] == r.red_flags

    with running_server(ScriptedBackend(answer), tmp_path / "block", block_red_flags=True) as (url, svc):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x")
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": CHEST}])
        assert r.blocked is True and r.choices[0].finish_reason == "content_filter"
        assert r.choices[0].message.content == "" and r.usage.completion_tokens == 0  # never generated
        calm = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Any tips?"}],
                                              stream=True)
        chunks = list(calm)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == ""  # the draft was withheld
        assert chunks[-1].choices[0].finish_reason == "content_filter" and chunks[-1].blocked is True
        assert any(h["source"] == "draft" for h in chunks[-1].red_flags)
        rows = audit_rows(svc)
        assert [r["action"] for r in rows] == ["api_blocked", "api_blocked"]
        assert rows[0]["draft"] == "" and rows[1]["draft"] == answer and rows[1]["final_text"] is None

        metrics = httpx.get(f"{url}/metrics").text
        assert 'distillm_requests_total{endpoint="/v1/chat/completions",status="200"} 2.0' in metrics
        assert 'distillm_red_flag_responses_total{outcome="blocked"} 2.0' in metrics
        assert "distillm_request_seconds_bucket" in metrics and "distillm_queue_depth 0.0" in metrics
        assert "distillm_tokens_total" in metrics


def test_healthz_and_models_shape(tiny_server):
    url, svc = tiny_server
    health = httpx.get(f"{url}/healthz").json()
    assert health["status"] == "ok" and health["slots"] == 2 and health["queue_depth"] == 0
    models = httpx.get(f"{url}/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == svc.model_id
