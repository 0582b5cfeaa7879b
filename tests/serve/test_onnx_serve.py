"""The server over an ONNX export (``OnnxSlotScheduler``: N rows of one session's KV buffers):

- concurrent greedy streams through the ``openai`` client, more than the slots, each give exactly
  the text of one-at-a-time greedy generation on the backend alone (the naive reference);
- a sampled request with a ``seed`` gives the same text alone and while other streams run (the
  per-request seed that onnxruntime-genai's CPU Engine refuses, see ``onnx_batch.py``);
- a client that disconnects mid-stream frees its row.

Run: ``pytest tests/serve/test_onnx_serve.py`` (the tiny random Llama exported to ONNX; seconds).
"""

from __future__ import annotations

import threading

import openai
from serve_helpers import disconnect_mid_stream, running_server

from distillm_edge.backends.generate import GenerationSettings, generate_text

QUESTIONS = ["What is anemia?", "Name two causes of chest pain, briefly please.", "Hi",
             "What does a high INR mean?", "Define hypertension."]
LONG = "Write a long essay on anatomy."


def _ids(backend, question):
    return backend.chat_ids([{"role": "user", "content": question}])


def test_onnx_serve_batches_streams_equal_to_alone(tiny_onnx_backend, tmp_path):
    backend = tiny_onnx_backend
    expected = [generate_text(backend, _ids(backend, q), GenerationSettings(max_new_tokens=12, temperature=0)).text
                for q in QUESTIONS]
    sampled = GenerationSettings(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    expected_sampled = generate_text(backend, _ids(backend, QUESTIONS[0]), sampled).text
    assert expected_sampled != expected[0]  # it does sample
    # the disconnect below needs a stream that is still running after its first tokens
    assert len(list(backend.stream(_ids(backend, LONG), 200))) == 200
    with running_server(backend, tmp_path, parallel=2, queue=8) as (url, svc):
        assert type(svc.engine.scheduler).__name__ == "OnnxSlotScheduler"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x")
        got: dict = {}

        def ask(key, question, **options):
            stream = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": question}], max_tokens=12, stream=True, **options)
            got[key] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        threads = [threading.Thread(target=ask, args=(i, q), kwargs={"temperature": 0}) for i, q in enumerate(QUESTIONS)]
        threads.append(threading.Thread(target=ask, args=("sampled", QUESTIONS[0]),
                                        kwargs={"temperature": 1.0, "top_p": 0.9, "seed": 7}))
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert [got[i] for i in range(len(QUESTIONS))] == expected
        assert got["sampled"] == expected_sampled

        disconnect_mid_stream(svc, url, LONG, 200, "row")
