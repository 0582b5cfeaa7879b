"""Batched greedy decoding with left padding gives the same tokens as one-at-a-time greedy streams.

Run: ``pytest tests/bench/test_bench_batch.py`` (a 2-layer random Llama; seconds; the GGUF and ONNX tests are slow-marked).
"""

from __future__ import annotations

import math

import pytest

from distillm_edge.bench.batch import left_pad, torch_batch_generate


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids == [[5, 6, 7], [0, 0, 8]]
    assert mask == [[1, 1, 1], [0, 0, 1]]


def test_batched_greedy_matches_single_streams(tiny_llama_dir):
    from distillm_edge.backends.torch_backend import TorchBackend

    backend = TorchBackend(str(tiny_llama_dir), threads=1)
    prompts = [[1, 50, 60, 70, 80, 90], [1, 300, 400], [1, 7, 8, 9, 10]]  # different lengths: padding is exercised
    out = torch_batch_generate(backend.model, prompts, new_tokens=6, pad_id=0)
    assert len(out["tokens"]) == 3 and all(len(row) == 6 for row in out["tokens"])
    for prompt, batched in zip(prompts, out["tokens"]):
        single = list(backend.stream(prompt, 6))  # stops early only at EOS
        assert batched[: len(single)] == single
    assert out["prefill_s"] > 0 and out["decode_tps"] > 0 and out["total_tps"] > 0
    one = torch_batch_generate(backend.model, prompts[:1], new_tokens=1)
    assert math.isnan(one["decode_tps"]) and one["tokens"] == [out["tokens"][0][:1]]


def test_fake_clock_gives_exact_throughput(monkeypatch):
    """Timing arithmetic with an injected clock: every model call takes 1 s."""
    torch = pytest.importorskip("torch")

    class Clock:
        t = 0.0

        def __call__(self):
            return self.t

    clock = Clock()

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.config = None

        def forward(self, input_ids, cache=None, **kw):
            clock.t += 1.0
            logits = torch.zeros(input_ids.shape[0], 1, 10)
            logits[..., 3] = 1
            return type("Out", (), {"logits": logits, "cache": cache})()

    monkeypatch.setattr("transformers.DynamicCache", lambda config=None: None)
    out = torch_batch_generate(Model(), [[1, 2], [3, 4]], new_tokens=5, clock=clock)
    assert out["tokens"] == [[3] * 5, [3] * 5]
    assert out["prefill_s"] == 1.0
    assert out["decode_tps"] == pytest.approx(2 * 4 / 4.0)
    assert out["total_tps"] == pytest.approx(2 * 5 / 5.0)


@pytest.mark.slow
def test_gguf_batch_matches_single_streams():
    """llama.cpp: k sequences in one context give each prompt's one-at-a-time greedy tokens."""
    from distillm_edge.backends import open_backend
    from distillm_edge.bench.batch import batch_unsupported, generate_batch

    backend = open_backend("smollm2-135m-instruct", backend="gguf", threads=1, n_ctx=256)
    try:
        assert batch_unsupported("gguf", backend) == ""
        prompts = [backend.tokenize(t) for t in ("Anemia is", "The kidney filters", "Asthma is a chronic disease of")]
        out = generate_batch("gguf", backend, prompts, 6)
        assert len(out["tokens"]) == 3 and all(len(row) == 6 for row in out["tokens"])
        for prompt, batched in zip(prompts, out["tokens"]):
            single = list(backend.stream(prompt, 6))  # stops early only at EOS
            assert batched[: len(single)] == single
        assert out["prefill_s"] > 0 and out["decode_tps"] > 0 and out["total_tps"] > 0
    finally:
        backend.close()


@pytest.mark.slow
def test_onnx_genai_batch_matches_single_streams(tmp_path, tiny_llama_dir):
    """ONNX Runtime GenAI with batch_size=k gives each prompt's one-at-a-time greedy tokens."""
    from distillm_edge.backends import open_backend
    from distillm_edge.bench.batch import batch_unsupported, generate_batch
    from distillm_edge.export import ExportConfig, run

    art = run(ExportConfig(model=str(tiny_llama_dir), format="onnx", quant="fp32", outdir=tmp_path, verify=False)).artifact
    backend = open_backend(str(art), threads=1)
    assert batch_unsupported("onnx", backend) == ""
    prompts = [[1, 50, 60, 70, 80], [1, 300, 400, 500, 600], [1, 7, 8, 9, 10]]
    out = generate_batch("onnx", backend, prompts, 6)
    assert len(out["tokens"]) == 3 and all(len(row) == 6 for row in out["tokens"])
    for prompt, batched in zip(prompts, out["tokens"]):
        single = list(backend.stream(prompt, 6))  # stops early only at EOS
        assert batched[: len(single)] == single
    assert out["decode_tps"] > 0
    with pytest.raises(ValueError, match="equal length"):
        generate_batch("onnx", backend, [[1, 2], [1, 2, 3]], 2)
