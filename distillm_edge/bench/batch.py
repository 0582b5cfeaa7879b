"""Batched greedy decoding, timed: throughput at batch 1, 4 and 8 on torch, llama.cpp and ONNX.

The shared ``Backend.stream`` decodes one sequence, so the batch measurement drives each runtime
directly, always exactly ``new_tokens`` per row (EOS is ignored: timing needs equal work per step):

- torch: left-pad the prompts, run one prefill over the whole batch with an attention mask and
  explicit positions, then decode all rows together with the KV cache;
- llama.cpp: one context with k sequences over the backend's loaded model
  (``backends/llamacpp_batch.py``, what ``serve`` runs): each prompt is prefilled, then every step
  is one ``llama_decode`` carrying the next token of all k sequences;
- ONNX, exports whose KV cache GroupQueryAttention updates in place (``backend.share_buffer``, what
  our exporter writes): the batch dimension in the KV buffers of the backend's own session
  (``backends/onnx_batch.py``, what ``serve`` runs): each prompt is prefilled alone, then every step
  is one session run over all k rows;
- ONNX, other exports: ONNX Runtime GenAI's ``Generator`` with ``batch_size=k`` on the export
  directory (``onnx_batch_generate``); prompts must have equal length (bench's prompts do: exactly N
  tokens). GenAI runs with the session options of the export's ``genai_config.json``, not
  ``--threads``. ``benchmarks/backend_overhead.py --batch 1,4,8`` times both (and GenAI's ``Engine``)
  side by side on one export.

Test: ``pytest tests/bench/test_bench_batch.py`` (batched output == one-at-a-time greedy output).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from distillm_edge.backends.slots import batch_timings


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Left-padded ids and the matching attention mask (1 = real token)."""
    width = max(len(p) for p in prompts)
    ids = [[pad_id] * (width - len(p)) + list(p) for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return ids, mask


def torch_batch_generate(model, prompts: Sequence[Sequence[int]], new_tokens: int, pad_id: int = 0,
                         clock: Callable[[], float] = time.perf_counter) -> dict:
    """Greedy-decode ``new_tokens`` for every prompt in one batch; tokens and timings."""
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    x = torch.tensor(ids, dtype=torch.long, device=device)
    attention = torch.tensor(mask, dtype=torch.long, device=device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    generated = []
    with torch.inference_mode():
        start = clock()
        for step in range(new_tokens):
            out = model(input_ids=x, attention_mask=attention, position_ids=positions, cache=cache,
                        use_cache=True, logits_to_keep=1)
            cache = out.cache
            x = out.logits[:, -1].argmax(-1, keepdim=True)
            generated.append(x)
            if step == 0:
                first = clock()
            attention = torch.cat([attention, torch.ones_like(x)], dim=-1)
            positions = positions[:, -1:] + 1
        x.cpu()  # wait for the last step (matters on accelerators)
        end = clock()
    return batch_timings(torch.cat(generated, dim=-1).tolist(), new_tokens, start, first, end)


def gguf_batch_generate(backend, prompts: Sequence[Sequence[int]], new_tokens: int,
                        clock: Callable[[], float] = time.perf_counter) -> dict:
    """Greedy-decode ``new_tokens`` for every prompt as sequences of one llama.cpp context."""
    from distillm_edge.backends.llamacpp_batch import MultiSequenceDecoder, batch_generate

    n_ctx = max(len(p) for p in prompts) + new_tokens + 8
    decoder = MultiSequenceDecoder(backend, len(prompts), n_ctx, n_batch=backend.n_batch, threads=backend.info.threads)
    try:
        return batch_generate(decoder, prompts, new_tokens, clock=clock)
    finally:
        decoder.close()


def batch_unsupported(kind: str, backend=None) -> str:
    """Why batch throughput is not measured for a backend ("" when it is)."""
    if kind == "torch":
        return ""
    if kind == "gguf":
        if backend is None or hasattr(backend, "native"):
            return ""
        return "this backend has no llama.cpp context for multi-sequence batches (one sequence only)"
    if kind == "onnx":
        if backend is None or (hasattr(backend, "path") and getattr(backend, "session", None) is not None):
            return ""
        return "this backend is not an ONNX export directory that ONNX Runtime GenAI can open"
    return f"unknown backend kind {kind!r}"


def generate_batch(kind: str, backend, prompts: Sequence[Sequence[int]], new_tokens: int) -> dict:
    """Batched greedy decoding on the backend's own runtime (see the module docstring)."""
    if kind == "torch":
        pad = backend.tokenizer.pad_token_id if backend.tokenizer.pad_token_id is not None else 0
        return torch_batch_generate(backend.model, prompts, new_tokens, pad_id=pad)
    if kind == "gguf":
        return gguf_batch_generate(backend, prompts, new_tokens)
    if kind == "onnx":
        if getattr(backend, "share_buffer", False):
            return onnx_serve_batch_generate(backend, prompts, new_tokens)
        return onnx_batch_generate(backend, prompts, new_tokens)
    raise ValueError(f"no batched generation for backend kind {kind!r}: {batch_unsupported(kind)}")


def onnx_serve_batch_generate(backend, prompts: Sequence[Sequence[int]], new_tokens: int,
                              clock: Callable[[], float] = time.perf_counter) -> dict:
    """Greedy-decode ``new_tokens`` for every prompt as rows of the backend's session, as ``serve`` does."""
    from distillm_edge.backends.onnx_batch import BatchDecoder, batch_generate

    decoder = BatchDecoder(backend, len(prompts), max(len(p) for p in prompts) + new_tokens)
    return batch_generate(decoder, prompts, new_tokens, clock=clock)


def onnx_batch_generate(backend, prompts: Sequence[Sequence[int]], new_tokens: int,
                        clock: Callable[[], float] = time.perf_counter) -> dict:
    """Greedy-decode ``new_tokens`` for every prompt in one ONNX Runtime GenAI batch (equal lengths)."""
    import numpy as np
    import onnxruntime_genai as og

    if len({len(p) for p in prompts}) != 1:
        raise ValueError("ONNX Runtime GenAI batches here need prompts of equal length (no padding)")
    model = getattr(backend, "_og_model", None)
    if model is None:  # loaded once per backend: the weights are not counted in the timing
        model = backend._og_model = og.Model(str(backend.path))
    length = len(prompts[0]) + new_tokens
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=length, min_length=length, batch_size=len(prompts))
    generator = og.Generator(model, params)
    tokens: list[list[int]] = [[] for _ in prompts]
    start = clock()
    generator.append_tokens(np.asarray(prompts, dtype=np.int32))
    for step in range(new_tokens):
        generator.generate_next_token()
        for row, token in zip(tokens, generator.get_next_tokens()):
            row.append(int(token))
        if step == 0:
            first = clock()
    end = clock()
    return batch_timings(tokens, new_tokens, start, first, end)
