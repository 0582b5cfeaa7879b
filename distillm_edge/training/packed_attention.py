"""Attention of a packed row computed example by example, instead of as one masked square.

A packed row (``packing.py``) holds several examples; transformers' ``sdpa`` path gives it a
block-diagonal causal mask over the whole row, and torch's CPU kernels then compute every entry of
the L x L square (masked ones included) and cannot use their causal shortcut. For a row of n
examples of ~L/n tokens that is ~2n x the attention the examples need run apart (~8x for the
default's ~4 examples per 512-token row: about a seventh of the default step went there).

:func:`packed_attention` runs a model's forward with :data:`NAME`, an attention function
registered with transformers' ``AttentionInterface``: for each example of the row (position ids
restart at 0 where one starts) it calls transformers' own ``sdpa_attention_forward`` on that
example's queries, keys and values with ``is_causal`` (no mask; a sliding-window layer whose
example is longer than its window gets the window as a mask), and concatenates the outputs. The
name has no mask function registered, so transformers builds no mask for it. Every entry the
masked square kept is computed from the same inputs, and the masked ones were exact zeros there:
the outputs agree to the kernels' rounding (``tests/training/test_packed_attention.py``: logits,
losses and gradients against the masked ``sdpa`` path and against the examples run alone).

Used by the trainer for the student's and the online teachers' forwards on packed rows when
their attention is ``sdpa`` (eager attention, needed for attention maps, is left alone).
Benchmark: ``python benchmarks/train_step.py --sections default``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

NAME = "distillm_packed_sdpa"
_LOCK = threading.Lock()
_USERS: dict[int, int] = {}  # id(model) -> forwards inside packed_attention now (micro-batch threads share models)


def packed_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, *, position_ids: torch.Tensor | None = None,
                          sliding_window: int | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' ``sdpa_attention_forward`` on each example of a one-row packed batch (causal), concatenated.

    query/key/value: [1, heads, L, head_dim]; ``position_ids`` [1, L] restart at 0 per example.
    Returns ([1, L, heads, head_dim], None) as the ``AttentionInterface`` expects.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    kwargs.pop("is_causal", None)
    if attention_mask is not None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        raise ValueError(f"{NAME} takes one packed row without a mask or KV cache (got batch {query.shape[0]}, "
                         f"{query.shape[2]} queries, {key.shape[2]} keys, mask {attention_mask is not None})")
    length = query.shape[2]
    starts = [0] if position_ids is None else (position_ids[0] == 0).nonzero().view(-1).tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    bounds = starts + [length]
    outs = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        mask = None
        n = b - a
        if sliding_window is not None and n > sliding_window:  # transformers' overlay: kv_idx > q_idx - window
            q = torch.arange(n, device=query.device).view(-1, 1)
            k = torch.arange(n, device=query.device).view(1, -1)
            mask = ((k <= q) & (k > q - sliding_window)).view(1, 1, n, n)
        out, _ = sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], mask,
                                        is_causal=True, **kwargs)
        outs.append(out)
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)), None


def register() -> None:
    """Register :data:`NAME` with transformers (idempotent)."""
    from transformers import AttentionInterface

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, packed_sdpa_attention)


def per_example_pays(model: torch.nn.Module) -> bool:
    """Whether ``model`` should attend per packed example: on the CPU (whose kernels pay for the masked
    square), and not under gradient checkpointing, whose recomputation in backward runs outside this
    switch and would save other tensors than the forward did (``CheckpointError``;
    ``tests/training/test_checkpointing.py``). On a GPU the masked ``sdpa`` kernel stays: a lent H200
    (``benchmarks/gpu_check.py``) trained the packed default shape ~7x slower after this path came in
    (not isolated from the other changes of that run, but the per-example loop reads the row's
    boundaries back from the device in every layer)."""
    param = next(model.parameters(), None)
    on_cpu = param is None or param.device.type == "cpu"
    return on_cpu and not getattr(model, "is_activation_checkpointing", False)


@contextlib.contextmanager
def packed_attention(model: torch.nn.Module, position_ids: torch.Tensor | None) -> Iterator[None]:
    """Inside, ``model`` (a transformers ``PreTrainedModel``) attends per packed example (:data:`NAME`) when
    ``position_ids`` is given (a packed row) and its attention is ``sdpa``; otherwise nothing changes."""
    config = getattr(model, "config", None)
    with _LOCK:  # micro-batch threads (step.accumulate) share the models: the first in switches, the last out restores
        users = _USERS.get(id(model), 0)
        switch = position_ids is not None and config is not None and (
            users > 0 or (getattr(config, "_attn_implementation", None) == "sdpa" and per_example_pays(model)))
        if switch:
            if users == 0:
                register()
                model.set_attn_implementation(NAME)
            _USERS[id(model)] = users + 1
    if not switch:
        yield
        return
    try:
        yield
    finally:
        with _LOCK:
            _USERS[id(model)] -= 1
            if _USERS[id(model)] == 0:
                del _USERS[id(model)]
                model.set_attn_implementation("sdpa")
