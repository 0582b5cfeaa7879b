"""Prometheus metrics of the server (``GET /metrics``), in a registry of its own per app.

- ``distillm_requests_total{endpoint, status}`` — finished HTTP requests by status code;
- ``distillm_tokens_total{kind}`` — prompt and completion tokens;
- ``distillm_request_seconds{endpoint}`` / ``distillm_ttft_seconds{endpoint}`` — histograms of
  request latency and time to first token;
- ``distillm_red_flag_responses_total{outcome}`` — responses with active red flags (shown/blocked);
- ``distillm_queue_depth`` / ``distillm_slots_busy`` / ``distillm_slots`` — gauges read at scrape time.

Test: ``pytest tests/serve/test_api.py::test_metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self, engine):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("distillm_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.tokens = Counter("distillm_tokens", "Tokens processed", ["kind"], registry=r)
        self.latency = Histogram("distillm_request_seconds", "Request latency (s)", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("distillm_ttft_seconds", "Time to first token (s)", ["endpoint"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.red_flags = Counter("distillm_red_flag_responses", "Responses with active red flags",
                                 ["outcome"], registry=r)
        Gauge("distillm_queue_depth", "Admitted requests waiting for a slot", registry=r).set_function(
            lambda: engine.queued)
        Gauge("distillm_slots_busy", "Slots generating now", registry=r).set_function(lambda: engine.running)
        Gauge("distillm_slots", "Concurrent generation slots", registry=r).set(engine.slots)
