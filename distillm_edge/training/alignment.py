"""Intermediate-layer alignment losses (hidden states, attention maps) and weight penalties.

- ``hidden_state_loss``: for each ``{student_layer: teacher_layer}`` in the layer map, the MSE
  (mean over the hidden dimension, masked mean over tokens) between the student's hidden state,
  projected to the teacher's width by a learned linear map when the widths differ, and the
  teacher's. Layer indices index Hugging Face's ``output_hidden_states`` tuple (0 = embeddings,
  i = output of block i). Averaged over mapped layers. The projections come from
  ``make_projections`` and are owned (and optimized) by the trainer.
- ``attention_loss``: MSE between attention maps [B, H, T, T] (``output_attentions``; index i =
  block i, needs ``attn_implementation="eager"``) over causal pairs (key <= query) of valid
  positions, averaged over mapped layers. By default (``heads="mean"``) each side's heads are
  averaged to one map first: head i of one model has no relation to head i of an independently
  trained one. ``heads="per_head"`` compares head by head; with different head counts, if one
  divides the other the larger side's heads are averaged in consecutive groups down to the
  smaller count (the GQA grouping), otherwise both sides are averaged to one map. Pairs above
  the diagonal are 0 on both sides and are not counted in the denominator.
  For a teacher with a different tokenizer, attention is only compared on aligned positions
  (``positions`` from ``cross_tokenizer.align_batch``); without them it raises.
- ``l2_penalty``: sum of squared weights, or with ``reference`` the squared drift from those
  (initial) weights, L2-SP (Li et al. 2018) -- the choice for distillation, since the student
  starts from pretrained weights and plain L2 would pull them to 0 (AdamW weight decay already
  does that). No 1/2 factor; multiply by your coefficient. The trainer applies its gradient once
  per optimizer step instead (``l2_sp_gradient_``), which builds no graph over the weights.

Both losses take ``normalizer``: the denominator to use instead of this call's own count (the
trainer passes the count over a whole optimizer step, so accumulated micro-batches weigh tokens
like one batch). Teacher tensors are moved to the student's device (a teacher may sit on another GPU).

Test: ``pytest tests/training/test_alignment.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from distillm_edge.errors import UserError

HEAD_MODES = ("mean", "per_head")


def make_projections(layer_map: Mapping[int, int], student_width: int, teacher_width: int, *, bias: bool = False) -> nn.ModuleDict:
    """One projection per mapped student layer (key ``str(layer)``): Linear(student -> teacher width), or Identity."""
    return nn.ModuleDict({
        str(s): nn.Identity() if student_width == teacher_width else nn.Linear(student_width, teacher_width, bias=bias)
        for s in layer_map
    })


def _pick(states: Sequence[Tensor], index: int, who: str, what: str) -> Tensor:
    if not -len(states) <= index < len(states):
        raise UserError(f"layer map names {who} {what} {index}, but the model returned {len(states)} {what}s")
    return states[index]


def _gather_positions(x: Tensor, pos: Tensor) -> Tensor:
    """x [B, T, ...] at positions pos [B, K] (-1 = padding, gathers position 0): [B, K, ...]."""
    b = torch.arange(x.shape[0], device=x.device)[:, None]
    return x[b, pos.clamp_min(0)]


def _counted(mask: Tensor | None, batch: int, seq: int, positions: tuple[Tensor, Tensor] | None, device) -> Tensor:
    if mask is None:
        mask = torch.ones(batch, seq, dtype=torch.bool, device=device)
    elif tuple(mask.shape) != (batch, seq):
        raise ValueError(f"mask must be [batch, student seq] = {[batch, seq]}, got {list(mask.shape)}")
    if positions is None:
        return mask.bool()
    s_pos = positions[0]
    return (s_pos >= 0) & _gather_positions(mask.bool(), s_pos)


def hidden_state_loss(
    student_hidden: Sequence[Tensor],
    teacher_hidden: Sequence[Tensor],
    layer_map: Mapping[int, int],
    mask: Tensor | None = None,
    *,
    projections: Mapping[str, nn.Module] | None = None,
    positions: tuple[Tensor, Tensor] | None = None,
    weights: Tensor | None = None,
    normalizer: float | Tensor | None = None,
) -> Tensor:
    """Mean over mapped layers of the masked MSE between projected student and teacher hidden states.

    ``mask`` [B, Ts] counts student tokens; ``weights`` per sample [B] give a weighted mean;
    ``positions = (student_pos, teacher_pos)`` [B, K] (-1 padded) compare only aligned positions
    (cross-tokenizer teachers); otherwise both sequences must have the same length. ``normalizer``
    replaces each layer's denominator (the summed weights of its counted rows).
    """
    if not layer_map:
        raise UserError("hidden-state alignment needs a non-empty layer map {student_layer: teacher_layer}")
    total = None
    for s_layer, t_layer in layer_map.items():
        hs = _pick(student_hidden, s_layer, "student", "hidden state")
        ht = _pick(teacher_hidden, t_layer, "teacher", "hidden state").detach().to(hs.device)
        batch, seq = hs.shape[:2]
        if positions is not None:
            positions = (positions[0].to(hs.device), positions[1].to(hs.device))
        counted = _counted(mask, batch, seq, positions, hs.device)
        if positions is not None:
            hs, ht = _gather_positions(hs, positions[0]), _gather_positions(ht, positions[1])
        elif ht.shape[1] != seq:
            raise UserError(
                f"student ({seq}) and teacher ({ht.shape[1]}) sequence lengths differ: a teacher with another "
                "tokenizer needs positions=(student_pos, teacher_pos) from cross_tokenizer.align_batch"
            )
        b, t = counted.nonzero(as_tuple=True)
        hs_rows, ht_rows = hs[b, t], ht[b, t]
        proj = projections[str(s_layer)] if projections is not None and str(s_layer) in projections else None
        if proj is not None:
            param = next(iter(proj.parameters()), None)
            hs_rows = proj(hs_rows if param is None else hs_rows.to(param.dtype))
        if hs_rows.shape[-1] != ht_rows.shape[-1]:
            raise UserError(
                f"student layer {s_layer} has width {hs_rows.shape[-1]} but teacher layer {t_layer} has "
                f"{ht_rows.shape[-1]}: pass projections=make_projections(layer_map, {hs_rows.shape[-1]}, {ht_rows.shape[-1]})"
            )
        mse_rows = (hs_rows.float() - ht_rows.float()).pow(2).mean(dim=-1)
        w = torch.ones_like(mse_rows) if weights is None else weights.float().to(mse_rows.device)[b]
        denom = w.sum() if normalizer is None else torch.as_tensor(normalizer, dtype=torch.float32, device=w.device)
        layer_loss = (w * mse_rows).sum() / denom.clamp_min(1e-12)  # nothing counted: 0 / tiny = 0, zero gradients
        total = layer_loss if total is None else total + layer_loss
    return total / len(layer_map)


def _match_heads(a_s: Tensor, a_t: Tensor, heads: str) -> tuple[Tensor, Tensor]:
    hs, ht = a_s.shape[1], a_t.shape[1]
    if hs == ht and heads == "per_head":
        return a_s, a_t
    if heads == "per_head" and max(hs, ht) % min(hs, ht) == 0:
        def group(a: Tensor, n: int) -> Tensor:
            return a.reshape(a.shape[0], n, a.shape[1] // n, *a.shape[2:]).mean(dim=2)
        return (group(a_s, ht), a_t) if hs > ht else (a_s, group(a_t, hs))
    return a_s.mean(dim=1, keepdim=True), a_t.mean(dim=1, keepdim=True)


def attention_loss(
    student_attn: Sequence[Tensor],
    teacher_attn: Sequence[Tensor],
    layer_map: Mapping[int, int],
    attention_mask: Tensor | None = None,
    *,
    positions: tuple[Tensor, Tensor] | None = None,
    cross_tokenizer: bool = False,
    heads: str = "mean",
    normalizer: float | Tensor | None = None,
) -> Tensor:
    """Mean over mapped layers of the MSE between attention maps over valid causal (query, key) pairs.

    ``attention_mask`` [B, Ts]: 1 for real (non-padding) student tokens. With ``positions``, the
    maps are restricted to aligned rows and columns and each row is renormalized over the kept
    keys (so both sides are distributions over the same key set). ``normalizer`` replaces the
    number of counted pairs in each layer's denominator (counted pairs times compared heads).
    """
    if heads not in HEAD_MODES:
        raise UserError(f"unknown head matching '{heads}'; choose one of {', '.join(HEAD_MODES)}")
    if not layer_map:
        raise UserError("attention alignment needs a non-empty layer map {student_layer: teacher_layer}")
    total = None
    for s_layer, t_layer in layer_map.items():
        a_s = _pick(student_attn, s_layer, "student", "attention map").float()
        a_t = _pick(teacher_attn, t_layer, "teacher", "attention map").detach().to(a_s.device).float()
        batch, _, seq, _ = a_s.shape
        if positions is None and (cross_tokenizer or a_t.shape[-1] != seq):
            raise UserError(
                "attention alignment with a teacher that uses another tokenizer is only defined on aligned "
                "positions: pass positions=(student_pos, teacher_pos) from cross_tokenizer.align_batch "
                f"(student length {seq}, teacher length {a_t.shape[-1]})"
            )
        if positions is not None:
            positions = (positions[0].to(a_s.device), positions[1].to(a_s.device))
        valid = _counted(attention_mask, batch, seq, positions, a_s.device)
        if positions is not None:  # aligned positions increase on both sides: causal stays lower-triangular
            a_s, a_t = _aligned_submatrix(a_s, positions[0]), _aligned_submatrix(a_t, positions[1])
        a_s, a_t = _match_heads(a_s, a_t, heads)
        k = valid.shape[1]
        causal = torch.ones(k, k, dtype=torch.bool, device=valid.device).tril()
        pairs = (valid[:, :, None] & valid[:, None, :] & causal)[:, None].float()  # [B, 1, K, K]
        sq = (a_s - a_t).pow(2) * pairs
        counted = pairs.sum() if normalizer is None else torch.as_tensor(normalizer, dtype=torch.float32, device=pairs.device)
        layer_loss = sq.sum() / (counted * a_s.shape[1]).clamp_min(1e-12)  # nothing counted: 0, zero gradients
        total = layer_loss if total is None else total + layer_loss
    return total / len(layer_map)


def _aligned_submatrix(attn: Tensor, pos: Tensor) -> Tensor:
    """attn [B, H, T, T] restricted to rows/cols pos [B, K] (-1 padded -> zeroed), rows renormalized."""
    idx = pos.clamp_min(0)
    b = torch.arange(attn.shape[0], device=attn.device)[:, None, None]
    sub = attn.permute(0, 2, 3, 1)[b, idx[:, :, None], idx[:, None, :]]  # [B, K, K, H]
    keep = (pos >= 0).to(sub.dtype)
    sub = sub * keep[:, None, :, None]
    sub = sub / sub.sum(dim=2, keepdim=True).clamp_min(1e-12)
    return sub.permute(0, 3, 1, 2)


@torch.no_grad()
def l2_sp_gradient_(params: Sequence[Tensor], reference: Sequence[Tensor], weight: float) -> float:
    """Add the gradient of ``weight * sum ||p - p0||^2``, i.e. ``2 weight (p - p0)``, to each ``p.grad``.

    Returns the penalty's value ``sum ||p - p0||^2`` (fp32, unweighted). One parameter at a time:
    no autograd graph over the weights and no second full copy on the accelerator (``reference``
    may live on the CPU; each tensor is moved over when its turn comes).
    """
    if len(reference) != len(params):
        raise ValueError(f"l2_sp_gradient_ got {len(params)} parameters but {len(reference)} reference tensors")
    total = 0.0
    for p, r in zip(params, reference):
        drift = p.detach().float() - r.to(p.device, non_blocking=True).float()
        total += float(drift.pow(2).sum())
        if weight:
            step = drift.mul_(2.0 * weight).to(p.dtype)
            if p.grad is None:
                p.grad = step
            else:
                p.grad.add_(step)
    return total


def l2_penalty(params: Iterable[Tensor], reference: Sequence[Tensor] | None = None) -> Tensor:
    """sum ||p||^2 over ``params``, or sum ||p - p0||^2 with ``reference`` (same order and shapes), fp32."""
    params = list(params)
    if reference is not None and len(reference) != len(params):
        raise ValueError(f"l2_penalty got {len(params)} parameters but {len(reference)} reference tensors")
    total = torch.zeros((), dtype=torch.float32, device=params[0].device if params else "cpu")
    for i, p in enumerate(params):
        if reference is None:
            total = total + p.float().pow(2).sum()
            continue
        r = reference[i]
        if r.shape != p.shape:
            raise ValueError(f"l2_penalty: parameter {i} has shape {tuple(p.shape)}, reference {tuple(r.shape)}")
        total = total + (p.float() - r.detach().float().to(p.device)).pow(2).sum()
    return total
