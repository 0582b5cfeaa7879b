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
def test_onnx_batches_match_single_streams(tmp_path, tiny_llama_dir, monkeypatch):
    """ONNX: serve's batched rows (prompts of any length) and ONNX Runtime GenAI with batch_size=k
    (exports without shared KV buffers) give each prompt's one-at-a-time greedy tokens."""
    from distillm_edge.backends import open_backend
    from distillm_edge.bench import batch
    from distillm_edge.export import ExportConfig, run

    art = run(ExportConfig(model=str(tiny_llama_dir), format="onnx", quant="fp32", outdir=tmp_path, verify=False)).artifact
    backend = open_backend(str(art), threads=1)
    assert batch.batch_unsupported("onnx", backend) == "" and backend.share_buffer
    paths = []
    monkeypatch.setattr(batch, "onnx_serve_batch_generate",
                        lambda *a, f=batch.onnx_serve_batch_generate: paths.append("serve") or f(*a))
    monkeypatch.setattr(batch, "onnx_batch_generate", lambda *a, f=batch.onnx_batch_generate: paths.append("genai") or f(*a))
    prompts = [[1, 50, 60, 70, 80], [1, 300, 400, 500, 600], [1, 7, 8, 9, 10]]
    singles = [list(backend.stream(prompt, 6)) for prompt in prompts]  # stops early only at EOS
    uneven = [[1, 2], [1, 50, 60, 70, 80, 90, 100]]
    for prompts_, expected in ((prompts, singles), (uneven, [list(backend.stream(p, 6)) for p in uneven])):
        out = batch.generate_batch("onnx", backend, prompts_, 6)
        assert len(out["tokens"]) == len(prompts_) and all(len(row) == 6 for row in out["tokens"])
        for single, batched in zip(expected, out["tokens"], strict=True):
            assert batched[: len(single)] == single
        assert out["decode_tps"] > 0
    assert paths == ["serve", "serve"]  # the path serve runs, not GenAI's

    monkeypatch.setattr(backend, "share_buffer", False)  # an export serve cannot batch: GenAI's Generator
    out = batch.generate_batch("onnx", backend, prompts, 6)
    for single, batched in zip(singles, out["tokens"], strict=True):
        assert batched[: len(single)] == single
    assert paths[-1] == "genai"
    with pytest.raises(ValueError, match="equal length"):
        batch.generate_batch("onnx", backend, [[1, 2], [1, 2, 3]], 2)
