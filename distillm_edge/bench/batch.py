"""Batched greedy decoding on a PyTorch model, timed: throughput at batch 1 and batch 8.

The shared ``Backend.stream`` decodes one sequence, so the batch measurement drives the torch
model directly: left-pad the prompts, run one prefill over the whole batch with an attention mask
and explicit positions, then decode all rows together with the KV cache, always exactly
``new_tokens`` per row (EOS is ignored: timing needs equal work per step). llama.cpp and ONNX
Runtime rows report batch throughput as n/a (see ``run.py``'s reasons).

Test: ``pytest tests/bench/test_bench_batch.py`` (batched output == one-at-a-time greedy output).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


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
    batch = len(prompts)
    return {
        "tokens": torch.cat(generated, dim=-1).tolist(),
        "prefill_s": first - start,
        "decode_tps": batch * (new_tokens - 1) / (end - first) if new_tokens > 1 and end > first else float("nan"),
        "total_tps": batch * new_tokens / (end - start),
    }
