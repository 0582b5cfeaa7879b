"""`distillm-edge serve`: an OpenAI-compatible HTTP server with the same supervision as `chat`.

- ``config.py``: :class:`ServeConfig` and the bind policy (loopback, or an API key);
- ``engine.py``: admission (N slots + bounded queue) and generation over one loaded model
  (llama.cpp: several sequences in one context, ``backends/llamacpp_batch.py``);
- ``exchange.py``: one exchange under the safety layer (red flags, blocking, audit log);
- ``schemas.py``: request models, response shapes and the supervision extension fields;
- ``security.py``: API key and body-size guard; ``metrics.py``: Prometheus metrics;
- ``app.py``: the FastAPI routes; ``run.py``: wiring and uvicorn.

Run: ``distillm-edge serve --model smollm2-135m-instruct``. Test: ``pytest tests/serve``.
"""
