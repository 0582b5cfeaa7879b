"""The server on the embedded SmolLM2 GGUF (llama.cpp slots over one multi-sequence context):

- concurrent greedy streams through the ``openai`` client, more than the slots, each give exactly
  the text of one-at-a-time greedy generation on the backend's own context (the naive reference);
- a client that disconnects mid-stream frees its llama.cpp slot.

Run: ``pytest tests/serve/test_gguf_serve.py`` (slow-marked: loads the GGUF, ~30 s on 2 cores).
"""

from __future__ import annotations

import threading

import openai
import pytest
from serve_helpers import disconnect_mid_stream, running_server

from distillm_edge.backends.generate import GenerationSettings, generate_text

pytestmark = pytest.mark.slow

QUESTIONS = ["What is anemia?", "Name two causes of chest pain.", "How is asthma treated?",
             "What does a high INR mean?", "Define hypertension."]


@pytest.fixture(scope="module")
def gguf():
    from distillm_edge.backends import open_backend

    backend = open_backend("smollm2-135m-instruct", backend="gguf", threads=1, n_ctx=1024)
    yield backend
    backend.close()


def test_concurrent_streams_equal_one_at_a_time_greedy(gguf, tmp_path):
    settings = GenerationSettings(max_new_tokens=24, temperature=0)
    expected = [generate_text(gguf, gguf.chat_ids([{"role": "user", "content": q}]), settings).text
                for q in QUESTIONS]
    with running_server(gguf, tmp_path, parallel=2, queue=8, threads=1) as (url, svc):
        assert svc.engine.scheduler is not None
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x")
        got: dict[int, str] = {}

        def ask(i: int):
            stream = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": QUESTIONS[i]}], max_tokens=24, temperature=0,
                stream=True)
            got[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(QUESTIONS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert [got[i] for i in range(len(QUESTIONS))] == expected

        disconnect_mid_stream(svc, url, "Write a long essay on anatomy.", 250, "slot")
