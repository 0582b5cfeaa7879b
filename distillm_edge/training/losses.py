"""Distillation losses: KD divergences, cross-entropy, their mix, sample weights, several teachers.

Every loss here is a pure function of tensors that

- counts only the tokens where ``mask`` [B, T] is True -- the trainer passes the response tokens
  (prompt masked out); None counts every position. ``logits[b, t]`` predicts token ``t + 1`` of
  the sequence, i.e. the caller has already shifted labels/mask by one;
- takes optional ``weights``, per sample [B] or per token [B, T], and returns the weighted mean
  ``sum(w * loss_token) / sum(w)`` over counted tokens (``normalizer`` replaces the denominator);
- returns an fp32 scalar 0 (not NaN), with all-zero gradients, when nothing is counted;
- computes in fp32 even inside a bf16 autocast region (autocast is turned off in the chunk loop);
- never builds a full [B, T, V] fp32 tensor: the counted token rows are gathered ``chunk_size``
  rows at a time, upcast to fp32 inside the chunk, and the gradient w.r.t. the student logits is
  computed chunk by chunk *during the forward pass* (closed-form, see ``divergence_rows``) and kept
  in the logits' own dtype until backward. Consequence: backward may run once per forward
  (``retain_graph=True`` followed by a second backward through the same loss raises).

Divergences (teacher distribution p = softmax(z_T / tau), student q = softmax(z_S / tau)), all
multiplied by tau**2 (Hinton et al. 2015) so gradient magnitudes stay comparable across tau:

- ``forward_kl``: KL(p || q);  ``reverse_kl``: KL(q || p);
- ``jsd``: generalized Jensen-Shannon (GKD, Agarwal et al. 2024)
  JSD_beta = beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q.
  JSD_beta -> 0 at both ends; like GKD/TRL we define the endpoints as the limits of the scaled
  divergence: beta = 0 gives KL(p || q) (= lim JSD_beta / beta), beta = 1 gives KL(q || p);
- ``skew_kl``: KL(p || a p + (1 - a) q); ``skew_reverse_kl``: KL(q || a q + (1 - a) p)
  (DistiLLM, Ko et al. 2024; a = ``skew``, default 0.1; a = 0 is forward/reverse KL).

The mix (:func:`distillation_loss`) names its weight unambiguously:
``loss = (1 - kd_weight) * CE + kd_weight * KD`` (kd_weight = the weight of the distillation term).

Test: ``pytest tests/training/test_losses.py``; benchmark: ``python benchmarks/kd_loss.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from distillm_edge.errors import UserError

KINDS = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl")
CHUNK_ELEMENTS_CPU = 1 << 18  # default chunk on CPU: ~256K elements (1 MiB fp32, cache-sized) per buffer
CHUNK_ELEMENTS_GPU = 1 << 24  # on an accelerator: ~16M elements (64 MiB) per buffer, fewer launches
_FMIN = torch.finfo(torch.float32).min  # -inf log-probs are clamped here so 0 * log 0 == 0

# A row function maps one chunk of gathered rows to (loss per row, d loss / d raw student logits).
# Arguments: student rows fp32 [n, Vs] and teacher rows fp32 [n, Vt] or None (fresh copies it may
# overwrite), the slice of this chunk in the row list, and whether the gradient is needed.
RowFn = Callable[[Tensor, "Tensor | None", slice, bool], "tuple[Tensor, Tensor | None]"]


# --------------------------------------------------------------------------- per-row math (fp32)


def chunk_rows(vocab_size: int, chunk_size: int | None = None, device: torch.device | str = "cpu") -> int:
    """Rows per chunk: ``chunk_size`` if given, else ~``CHUNK_ELEMENTS_CPU``/``_GPU`` elements per buffer."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    budget = CHUNK_ELEMENTS_CPU if torch.device(device).type == "cpu" else CHUNK_ELEMENTS_GPU
    return max(1, budget // max(1, vocab_size))


def tempered_log_softmax(x: Tensor, temperature: float = 1.0) -> Tensor:
    """fp32 ``log_softmax(x / temperature)`` over the last dim, -inf clamped to the fp32 minimum.

    Divides ``x`` in place (callers pass a fresh chunk copy). The clamp keeps ``0 * log 0 == 0``
    when some logits are -inf (e.g. a masked vocabulary tail).
    """
    if temperature != 1.0:
        x.div_(temperature)
    return F.log_softmax(x, dim=-1).clamp_min_(_FMIN)


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise dot product of two [n, V] tensors."""
    return torch.linalg.vecdot(a, b)


def _project_softmax_grad_(g: Tensor, q: Tensor) -> Tensor:
    """In place: g - q * sum(g), the chain rule through log_softmax (g = q * dL/dq)."""
    return g.addcmul_(q, g.sum(dim=-1, keepdim=True), value=-1.0)


def divergence_rows(
    lq: Tensor, lp: Tensor, kind: str = "forward_kl", *, beta: float = 0.5, skew: float = 0.1,
    need_grad: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Per-row divergence between teacher log-probs ``lp`` and student log-probs ``lq`` [n, V] fp32.

    Returns ``(loss [n], grad [n, V])`` where ``grad`` is d loss / d s for student logits
    ``s`` with ``lq = log_softmax(s)`` (closed form; no autograd), or None if not ``need_grad``.
    No temperature scaling here. ``lq`` may be overwritten (it becomes the gradient buffer).
    """
    check_kind(kind, beta, skew)
    if kind == "jsd" and beta == 0.0 or kind == "skew_kl" and skew == 0.0:
        kind = "forward_kl"
    elif kind == "jsd" and beta == 1.0 or kind == "skew_reverse_kl" and skew == 0.0:
        kind = "reverse_kl"
    elif kind in ("skew_kl", "skew_reverse_kl") and skew == 1.0:  # KL(x || x) == 0
        return lq.new_zeros(lq.shape[0]), (lq.new_zeros(lq.shape) if need_grad else None)

    if kind == "forward_kl":  # sum p (lp - lq); d/ds = q - p
        p = lp.exp()
        loss = _rowdot(p, lp) - _rowdot(p, lq)
        return loss, (lq.exp_().sub_(p) if need_grad else None)
    if kind == "reverse_kl":  # sum q (lq - lp); g = q (lq - lp)
        q = lq.exp()
        g = (lq - lp).mul_(q)
        loss = g.sum(dim=-1)
        return loss, (g.addcmul_(q, loss.unsqueeze(1), value=-1.0) if need_grad else None)
    q = lq.exp()
    if kind == "jsd":  # g = (1 - beta) q (lq - lm): the p/m terms cancel (see tests)
        lm = torch.logaddexp(lp + math.log(beta), lq + math.log1p(-beta))
        p = lp.exp()
        loss = beta * (_rowdot(p, lp) - _rowdot(p, lm)) + (1.0 - beta) * (_rowdot(q, lq) - _rowdot(q, lm))
        if not need_grad:
            return loss, None
        g = lm.neg_().add_(lq).mul_(q).mul_(1.0 - beta)
        return loss, _project_softmax_grad_(g, q)
    if kind == "skew_kl":  # m = a p + (1 - a) q; dL/dq = -(1 - a) p / m
        lm = torch.logaddexp(lp + math.log(skew), lq + math.log1p(-skew))
        p = lp.exp()
        loss = _rowdot(p, lp) - _rowdot(p, lm)
        if not need_grad:
            return loss, None
        g = lm.neg_().add_(lp).add_(lq).exp_().mul_(-(1.0 - skew))
        return loss, _project_softmax_grad_(g, q)
    # skew_reverse_kl: m = a q + (1 - a) p; dL/dq = lq + 1 - lm - a q / m (the +1 cancels)
    lm = torch.logaddexp(lq + math.log(skew), lp + math.log1p(-skew))
    d = lq - lm
    loss = _rowdot(q, d)
    if not need_grad:
        return loss, None
    g = d.sub_(lm.neg_().add_(lq).exp_().mul_(skew)).mul_(q)
    return loss, _project_softmax_grad_(g, q)


def check_kind(kind: str, beta: float, skew: float) -> None:
    """Raise a UserError for an unknown divergence kind or a beta/skew outside [0, 1]."""
    if kind not in KINDS:
        raise UserError(f"unknown distillation loss kind '{kind}'; choose one of {', '.join(KINDS)}")
    if kind == "jsd" and not 0.0 <= beta <= 1.0:
        raise UserError(f"jsd beta must be in [0, 1], got {beta}")
    if kind.startswith("skew") and not 0.0 <= skew <= 1.0:
        raise UserError(f"skew must be in [0, 1], got {skew}")


# --------------------------------------------------------------------------- the chunked engine


class _ChunkedRows(torch.autograd.Function):
    """sum_r w_r * loss_r over gathered rows; d/d student logits computed in forward, per chunk."""

    @staticmethod
    def forward(ctx, student, teacher, s_b, s_t, t_b, t_t, row_w, row_fn, rows):
        need_grad = bool(ctx.needs_input_grad[0])
        grad = torch.zeros(student.shape, dtype=student.dtype, device=student.device) if need_grad else None
        flat_grad = grad.view(-1, student.shape[-1]) if need_grad else None
        total = torch.zeros((), dtype=torch.float32, device=student.device)
        n = s_b.numel()
        with torch.autocast(student.device.type, enabled=False):  # fp32 math even inside a bf16 autocast region
            for start in range(0, n, rows):
                sl = slice(start, min(n, start + rows))
                s = student[s_b[sl], s_t[sl]].float()
                t = None if teacher is None else teacher[t_b[sl], t_t[sl]].float()
                loss_rows, g = row_fn(s, t, sl, need_grad)
                w = row_w[sl]
                total += torch.dot(loss_rows, w)
                if need_grad:
                    flat_grad.index_copy_(0, s_b[sl] * student.shape[1] + s_t[sl], g.mul_(w.unsqueeze(1)).to(grad.dtype))
        ctx.grad = grad
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad = ctx.grad
        if grad is None:
            raise RuntimeError(
                "this chunked distillation loss was already backpropagated: its gradient buffer is "
                "handed to autograd once (backward twice / retain_graph=True is not supported)"
            )
        ctx.grad = None
        if grad_output.item() != 1.0:
            grad.mul_(grad_output.to(grad.dtype))
        return grad, None, None, None, None, None, None, None, None


def chunked_row_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    student_rows: tuple[Tensor, Tensor],
    teacher_rows: tuple[Tensor, Tensor] | None,
    row_weights: Tensor,
    row_fn: RowFn,
    chunk_size: int | None = None,
) -> Tensor:
    """The engine behind every loss here: ``sum_r row_weights[r] * row_fn(rows r)``, chunked.

    ``student_rows = (b, t)`` index tensors select rows ``student_logits[b, t]`` (each at most once);
    ``teacher_rows`` select the matching teacher rows (defaults to the same indices). Gradients
    flow to ``student_logits`` only.
    """
    if student_logits.dim() != 3:
        raise ValueError(f"student logits must be [batch, seq, vocab], got shape {tuple(student_logits.shape)}")
    s_b, s_t = student_rows
    t_b, t_t = teacher_rows if teacher_rows is not None else student_rows
    teacher = None if teacher_logits is None else teacher_logits.detach()
    if not torch.is_grad_enabled():  # no_grad / inference_mode: no gradient buffer at all
        student_logits = student_logits.detach()
    vocab = max(student_logits.shape[-1], 0 if teacher is None else teacher.shape[-1])
    rows = chunk_rows(vocab, chunk_size, student_logits.device)
    return _ChunkedRows.apply(student_logits, teacher, s_b, s_t, t_b, t_t, row_weights.float(), row_fn, rows)


def counted_rows(
    mask: Tensor | None, weights: Tensor | None, shape: tuple[int, int], normalizer: float | Tensor | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor, Tensor]:
    """``(b, t, w)``: counted positions and their weights divided by the denominator.

    The denominator is ``normalizer`` if given, else the sum of the counted weights; when it is 0
    (nothing counted, or all weights 0) no rows are returned, so the loss is exactly 0.
    """
    batch, seq = shape
    if mask is None:
        mask = torch.ones(shape, dtype=torch.bool, device=device)
    elif tuple(mask.shape) != (batch, seq):
        raise ValueError(f"mask must be [batch, seq] = {[batch, seq]}, got {list(mask.shape)}")
    mask = mask.bool()
    b, t = mask.nonzero(as_tuple=True)
    if weights is None:
        w = torch.ones(b.numel(), dtype=torch.float32, device=mask.device)
    else:
        if weights.dim() == 1 and weights.shape[0] == batch:
            w = weights.float()[b]
        elif tuple(weights.shape) == (batch, seq):
            w = weights.float()[b, t]
        else:
            raise ValueError(f"weights must be per sample [{batch}] or per token [{batch}, {seq}], got {list(weights.shape)}")
        if (w < 0).any() or not torch.isfinite(w).all():
            raise ValueError("weights must be finite and >= 0")
    denom = w.sum() if normalizer is None else torch.as_tensor(normalizer, dtype=torch.float32)
    if b.numel() == 0 or denom <= 0:
        empty = b[:0]
        return empty, empty, w[:0]
    return b, t, w / denom


# --------------------------------------------------------------------------- public losses


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    *,
    temperature: float = 1.0,
    kind: str = "forward_kl",
    beta: float = 0.5,
    skew: float = 0.1,
    weights: Tensor | None = None,
    normalizer: float | Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """tau**2 * divergence(softmax(teacher / tau), softmax(student / tau)), weighted mean over counted tokens.

    ``student_logits``/``teacher_logits`` [B, T, V] (any float dtype, same tokenizer and vocab);
    ``kind`` one of ``KINDS`` (``beta`` for jsd, ``skew`` for skew_kl / skew_reverse_kl).
    """
    check_kind(kind, beta, skew)
    if temperature <= 0:
        raise UserError(f"temperature must be > 0, got {temperature}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher logits {tuple(teacher_logits.shape)} and student logits {tuple(student_logits.shape)} "
            "differ: same-tokenizer KD needs equal shapes (slice padded vocab rows off, or use "
            "cross_tokenizer.cross_tokenizer_kd for a different tokenizer)"
        )
    b, t, w = counted_rows(mask, weights, tuple(student_logits.shape[:2]), normalizer, student_logits.device)
    tau = float(temperature)

    def row_fn(s: Tensor, te: Tensor | None, _sl: slice, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        lp = tempered_log_softmax(te, tau)
        loss, g = divergence_rows(tempered_log_softmax(s, tau), lp, kind, beta=beta, skew=skew, need_grad=need_grad)
        # d(tau^2 L)/dz = tau^2 * dL/ds * (1/tau)
        return loss.mul_(tau * tau), (g.mul_(tau) if g is not None else None)

    return chunked_row_loss(student_logits, teacher_logits, (b, t), None, w, row_fn, chunk_size)


def cross_entropy_loss(
    student_logits: Tensor,
    labels: Tensor,
    mask: Tensor | None = None,
    *,
    ignore_index: int = -100,
    weights: Tensor | None = None,
    normalizer: float | Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Cross-entropy of ``student_logits[b, t]`` against ``labels[b, t]`` (already shifted), chunked.

    Counted tokens: ``mask`` (default all) and ``labels != ignore_index``.
    """
    batch, seq, vocab = student_logits.shape
    if tuple(labels.shape) != (batch, seq):
        raise ValueError(f"labels must be [batch, seq] = {[batch, seq]}, got {list(labels.shape)}")
    valid = labels != ignore_index
    b, t, w = counted_rows(valid if mask is None else valid & mask.bool(), weights, (batch, seq), normalizer)
    row_labels = labels[b, t].long()
    if row_labels.numel() and (row_labels.min() < 0 or row_labels.max() >= vocab):
        raise ValueError(f"labels must be in [0, {vocab}) or {ignore_index}; got {row_labels.min()}..{row_labels.max()}")

    def row_fn(s: Tensor, _te: Tensor | None, sl: slice, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        lab = row_labels[sl].unsqueeze(1)
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        loss = (lse - s.gather(1, lab)).squeeze(1)
        if not need_grad:
            return loss, None
        g = s.sub_(lse).exp_()
        g.scatter_add_(1, lab, torch.full_like(lab, -1.0, dtype=g.dtype))
        return loss, g

    return chunked_row_loss(student_logits, None, (b, t), None, w, row_fn, chunk_size)


class DistillationLoss(NamedTuple):
    """``loss = (1 - kd_weight) * ce + kd_weight * kd``; a skipped (weight 0) term is None."""

    loss: Tensor
    ce: Tensor | None
    kd: Tensor | None


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor | None,
    mask: Tensor | None = None,
    *,
    kd_weight: float,
    temperature: float = 1.0,
    kind: str = "forward_kl",
    beta: float = 0.5,
    skew: float = 0.1,
    weights: Tensor | None = None,
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> DistillationLoss:
    """``(1 - kd_weight) * CE(labels) + kd_weight * KD(teacher)``; kd_weight is the *distillation* weight.

    kd_weight = 0 skips KD (teacher may be None); kd_weight = 1 skips CE (labels may be None).
    """
    if not 0.0 <= kd_weight <= 1.0:
        raise UserError(f"kd_weight (the weight of the distillation term) must be in [0, 1], got {kd_weight}")
    ce = kd = None
    if kd_weight < 1.0:
        if labels is None:
            raise ValueError("labels are required when kd_weight < 1")
        ce = cross_entropy_loss(student_logits, labels, mask, ignore_index=ignore_index, weights=weights,
                                chunk_size=chunk_size)
    if kd_weight > 0.0:
        if teacher_logits is None:
            raise ValueError("teacher_logits are required when kd_weight > 0")
        kd = kd_loss(student_logits, teacher_logits, mask, temperature=temperature, kind=kind, beta=beta,
                     skew=skew, weights=weights, chunk_size=chunk_size)
    if ce is None:
        return DistillationLoss(kd, None, kd)
    if kd is None:
        return DistillationLoss(ce, ce, None)
    return DistillationLoss((1.0 - kd_weight) * ce + kd_weight * kd, ce, kd)


# --------------------------------------------------------------------------- sample weights


def specialty_weights(
    specialties: Sequence[str],
    table: Mapping[str, float] | str,
    counts: Mapping[str, int] | None = None,
    *,
    default: float | None = None,
) -> Tensor:
    """Per-sample loss weights [B] (fp32) from each sample's specialty tag.

    ``table`` is either a mapping specialty -> weight (unknown tags use ``default``, or raise if
    it is None), or ``"inverse_frequency"``: ``w_s = total / (K * count_s)`` over ``counts``
    (dataset-level counts of K specialties; the batch's own counts if None), so a rare specialty
    weighs more and the average weight over the counted data is 1. The losses take the weighted
    mean, so only ratios between weights matter within a batch.
    """
    if isinstance(table, str):
        if table != "inverse_frequency":
            raise UserError(f"specialty weight table must be a mapping or 'inverse_frequency', got '{table}'")
        if counts is None:
            counts = {}
            for s in specialties:
                counts[s] = counts.get(s, 0) + 1
        if not counts or any(c <= 0 for c in counts.values()):
            raise UserError(f"inverse_frequency needs positive counts per specialty, got {dict(counts)}")
        total = sum(counts.values())
        table = {s: total / (len(counts) * c) for s, c in counts.items()}
    out = []
    for s in specialties:
        if s in table:
            out.append(float(table[s]))
        elif default is not None:
            out.append(float(default))
        else:
            raise UserError(
                f"specialty '{s}' has no weight; known: {', '.join(sorted(table)) or '(none)'}. "
                "Add it to the specialty weight table or set a default weight."
            )
    weights = torch.tensor(out, dtype=torch.float32)
    if (weights < 0).any() or not torch.isfinite(weights).all():
        raise UserError(f"specialty weights must be finite and >= 0, got {dict(table)}")
    return weights


# --------------------------------------------------------------------------- several teachers


def normalize_teacher_weights(weights: Sequence[float] | None, n_teachers: int) -> list[float]:
    """Static teacher weights normalized to sum to 1 (uniform if None); e.g. [0.6, 0.4]."""
    if weights is None:
        return [1.0 / n_teachers] * n_teachers
    if len(weights) != n_teachers:
        raise UserError(f"{len(weights)} teacher weights given for {n_teachers} teachers")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError(f"teacher weights must be >= 0 with a positive sum, got {list(weights)}")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


@torch.no_grad()
def token_entropy(
    logits: Tensor, mask: Tensor | None = None, *, temperature: float = 1.0, chunk_size: int | None = None
) -> Tensor:
    """Entropy (nats) of softmax(logits / temperature) per position, [B, T] fp32; 0 where not counted."""
    batch, seq, vocab = logits.shape
    if mask is None:
        mask = torch.ones(batch, seq, dtype=torch.bool, device=logits.device)
    b, t = mask.bool().nonzero(as_tuple=True)
    out = torch.zeros(batch, seq, dtype=torch.float32, device=logits.device)
    rows = chunk_rows(vocab, chunk_size, logits.device)
    for start in range(0, b.numel(), rows):
        sl = slice(start, start + rows)
        lp = tempered_log_softmax(logits[b[sl], t[sl]].float(), temperature)
        out[b[sl], t[sl]] = -_rowdot(lp.exp(), lp)
    return out


def confidence_weights(
    entropies: Sequence[Tensor],
    static_weights: Sequence[float] | None = None,
    *,
    temperature: float = 1.0,
    available: Sequence[Tensor] | None = None,
) -> Tensor:
    """Per-token teacher weights [K, B, T]: softmax over teachers of ``log w_k - H_k / temperature``.

    Lower teacher entropy H_k at a token -> more weight; ``static_weights`` (normalized) act as a
    prior (w_k * exp(-H_k / temperature), renormalized). Teachers not ``available`` at a token
    (e.g. a cross-tokenizer teacher with no aligned position) get 0 there; a token where no
    teacher is available gets 0 for all. With one teacher the weight is exactly 1 where available.
    """
    if temperature <= 0:
        raise UserError(f"confidence temperature must be > 0, got {temperature}")
    weights = normalize_teacher_weights(static_weights, len(entropies))
    logits = torch.stack([
        (math.log(w) if w > 0 else -math.inf) - h.float() / temperature for w, h in zip(weights, entropies, strict=True)
    ])
    if available is not None:
        avail = torch.stack([a.bool() for a in available])
        logits = logits.masked_fill(~avail, -math.inf)
    none = torch.isneginf(logits).all(dim=0, keepdim=True)
    return torch.softmax(logits.masked_fill(none, 0.0), dim=0).masked_fill(none, 0.0)


class MultiTeacherLoss(NamedTuple):
    """``loss = sum(per_teacher)``; ``per_teacher[k]`` is teacher k's weighted contribution."""

    loss: Tensor
    per_teacher: list[Tensor]


def multi_teacher_kd(
    student_logits: Tensor,
    teacher_logits: Sequence[Tensor],
    mask: Tensor | None = None,
    *,
    teacher_weights: Sequence[float] | None = None,
    confidence: str | None = None,
    confidence_temperature: float = 1.0,
    temperature: float = 1.0,
    kind: str = "forward_kl",
    beta: float = 0.5,
    skew: float = 0.1,
    weights: Tensor | None = None,
    chunk_size: int | None = None,
) -> MultiTeacherLoss:
    """KD from several same-tokenizer teachers.

    ``confidence=None``: ``sum_k w_k * kd_loss(student, teacher_k)`` with static weights
    ``teacher_weights`` normalized to 1 (research default [0.6, 0.4]; uniform if None).
    ``confidence="entropy"``: per token, teacher k gets ``c_k = confidence_weights(...)`` (static
    weights times exp(-H_k / confidence_temperature), H_k = entropy of teacher k's untempered
    distribution), i.e. ``sum_k sum_tok w_tok c_k,tok loss_k,tok / sum_tok w_tok``.
    One teacher gives exactly :func:`kd_loss`. For teachers with other tokenizers compute each
    teacher's loss with ``cross_tokenizer.cross_tokenizer_kd`` (same ``weights``/``normalizer``
    arguments) and combine them the same way.
    """
    if not teacher_logits:
        raise ValueError("multi_teacher_kd needs at least one teacher")
    static = normalize_teacher_weights(teacher_weights, len(teacher_logits))
    common = dict(temperature=temperature, kind=kind, beta=beta, skew=skew, chunk_size=chunk_size)
    if confidence is None:
        parts = [w * kd_loss(student_logits, tl, mask, weights=weights, **common) for w, tl in zip(static, teacher_logits)]
        return MultiTeacherLoss(sum(parts), parts)
    if confidence != "entropy":
        raise UserError(f"unknown teacher confidence weighting '{confidence}'; use None or 'entropy'")
    shape = tuple(student_logits.shape[:2])
    _, _, raw = counted_rows(mask, weights, shape, 1.0, student_logits.device)
    if raw.numel() == 0:  # nothing counted: every part is 0 with zero gradients
        parts = [kd_loss(student_logits, tl, mask, weights=weights, **common) for tl in teacher_logits]
        return MultiTeacherLoss(sum(parts), parts)
    denom = raw.sum()  # the same denominator kd_loss would use
    base = torch.ones(shape, device=student_logits.device) if weights is None else weights.float().reshape(weights.shape[0], -1).expand(shape)
    entropies = [token_entropy(tl, mask, chunk_size=chunk_size) for tl in teacher_logits]
    conf = confidence_weights(entropies, static, temperature=confidence_temperature)
    parts = [
        kd_loss(student_logits, tl, mask, weights=base * c, normalizer=denom, **common)
        for tl, c in zip(teacher_logits, conf)
    ]
    return MultiTeacherLoss(sum(parts), parts)
