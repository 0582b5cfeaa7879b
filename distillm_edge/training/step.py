"""One optimizer step's math: the loss of a micro-batch and the gradient accumulation over a step.

- :func:`compute_loss`: every loss term of one micro-batch; ``loss`` is the total that is
  backpropagated: ``(1 - kd_weight) CE + kd_weight KD`` (+ hidden-state, attention and L2 terms,
  and the learned vocabulary projections' own cross-entropy, which trains only them);
- :func:`distillation`: the teachers' KD losses combined (static or confidence weighting);
- :func:`accumulate`: forward + backward of a step's micro-batches (DDP gradient sync only on
  the last one); returns the step's logged loss parts and token counts;
- :func:`temperature`: the distillation temperature at a step.

The trainer (``trainer.py``) owns the loop, the optimizer step and checkpoints; this module owns
what one step computes. Test: ``pytest tests/training/test_trainer.py tests/training/test_step.py``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

from distillm_edge.training.batches import Batch, collate
from distillm_edge.training.config import TrainConfig
from distillm_edge.training.teachers import teacher_forward

if TYPE_CHECKING:
    from distillm_edge.training.trainer import Run


def compute_loss(r: Run, batch: Batch, tau: float) -> dict[str, torch.Tensor]:
    """All loss terms of one micro-batch; ``loss`` is the total that is backpropagated.

    Student logits are computed only at counted positions (``logits_to_keep=loss_mask``) and come
    back as flat rows [1, N, V]; every loss below works on those rows.
    """
    from distillm_edge.training.alignment import attention_loss, hidden_state_loss, l2_penalty
    from distillm_edge.training.losses import cross_entropy_loss, specialty_weights

    cfg, dev = r.cfg, r.accelerator.device
    out = r.student(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev),
                    logits_to_keep=batch.loss_mask.to(dev), output_hidden_states=bool(r.hidden_map) or None,
                    output_attentions=bool(r.attention_map) or None)
    vocab = out.logits.shape[-1]
    logits = out.logits.reshape(1, -1, vocab)
    row_w = None
    if cfg.specialty_weights is not None:  # per-sample weights, spread over each sample's rows
        per_sample = specialty_weights(batch.specialties, cfg.specialty_weights, r.specialty_counts, default=1.0)
        row_w = per_sample[batch.row_sample].view(1, -1).to(dev)
    parts: dict[str, torch.Tensor] = {}
    total = logits.new_zeros((), dtype=torch.float32)
    if cfg.kd_weight < 1.0:
        parts["ce"] = cross_entropy_loss(logits, batch.targets.view(1, -1).to(dev), weights=row_w)
        total = total + (1.0 - cfg.kd_weight) * parts["ce"]
    if cfg.kd_weight > 0.0 or r.hidden_map or r.attention_map:
        outs = {t.index: teacher_forward(t, batch, student_vocab=vocab,
                                         hidden=bool(r.hidden_map) and t.index == cfg.hidden.teacher,
                                         attentions=bool(r.attention_map) and t.index == cfg.attention.teacher,
                                         shared_only=cfg.cross_tokenizer.shared_only)
                for t in r.teachers}
        if cfg.kd_weight > 0.0:
            parts |= distillation(r, batch, logits, outs, row_w, tau)
            total = total + cfg.kd_weight * parts["kd"]
            for key in [k for k in parts if k.startswith("projection_ce/")]:  # trains the vocab projections only
                total = total + parts[key]
        if r.hidden_map:
            t = r.teachers[cfg.hidden.teacher]
            view = None if t.same_tokenizer else batch.views[t.index]
            parts["hidden"] = hidden_state_loss(
                out.hidden_states, outs[t.index].hidden_states, r.hidden_map, batch.loss_mask.to(dev),
                projections=r.projections, positions=None if view is None else (view.student_pos.to(dev), view.teacher_pos.to(dev)))
            total = total + cfg.hidden.weight * parts["hidden"]
        if r.attention_map:
            t = r.teachers[cfg.attention.teacher]
            view = None if t.same_tokenizer else batch.views[t.index]
            parts["attention"] = attention_loss(
                out.attentions, outs[t.index].attentions, r.attention_map, batch.attention_mask.to(dev),
                positions=None if view is None else (view.student_pos.to(dev), view.teacher_pos.to(dev)),
                cross_tokenizer=view is not None, heads=cfg.attention.heads)
            total = total + cfg.attention.weight * parts["attention"]
    if r.l2_reference is not None:
        params = r.optimizer.param_groups[0]["params"]  # not the vocabulary projections
        parts["l2"] = l2_penalty(params, r.l2_reference)
        total = total + cfg.l2_weight * parts["l2"]
    parts["loss"] = total
    return parts


def distillation(r: Run, batch: Batch, logits: torch.Tensor, outs: dict, row_w: torch.Tensor | None,
                 tau: float) -> dict[str, torch.Tensor]:
    """``kd``: the teachers' KD losses combined, and each teacher's own (``kd/<name>``, for the logs).

    A teacher with another tokenizer is compared on the shared vocabulary (+ ULD), or with
    ``cross_tokenizer.method: projection`` against its learned vocabulary projection, whose
    cross-entropy comes back as ``projection_ce/<name>`` (not detached: the caller adds it).

    Static weighting: ``sum_k w_k KD_k`` (each KD_k a mean over the rows teacher k covers).
    Confidence weighting: per row, teacher k gets ``c_k`` from its entropy (``losses.confidence_weights``,
    the static weights as prior); a cross-tokenizer teacher is only available at aligned rows.
    """
    from distillm_edge.training.cross_tokenizer import cross_tokenizer_kd, projected_kd
    from distillm_edge.training.losses import confidence_weights, kd_loss, token_entropy

    cfg, dev, n = r.cfg, logits.device, logits.shape[1]
    common = dict(temperature=tau, kind=cfg.divergence, beta=cfg.jsd_beta, skew=cfg.skew)
    conf = None
    if cfg.teacher_weighting == "confidence":
        entropies, available = [], []
        for t in r.teachers:
            tl = outs[t.index].logits.to(dev)
            if t.same_tokenizer:
                entropies.append(token_entropy(tl))
                available.append(torch.ones(1, n, dtype=torch.bool, device=dev))
                continue
            view = batch.views[t.index]
            h, a = torch.zeros(1, n, device=dev), torch.zeros(1, n, dtype=torch.bool, device=dev)
            h[0, view.student_rows.to(dev)] = token_entropy(tl[:, view.teacher_rows.to(dev)]).view(-1)
            a[0, view.student_rows.to(dev)] = True
            entropies.append(h)
            available.append(a)
        conf = confidence_weights(entropies, [t.weight for t in r.teachers], available=available)
    base_w = row_w if row_w is not None else torch.ones(1, n, device=dev)
    parts, kd = {}, logits.new_zeros((), dtype=torch.float32)
    for t in r.teachers:
        tl = outs[t.index].logits.to(dev)
        # static: teacher k's own weighted mean, scaled by w_k; confidence: per-row weights, one shared denominator
        w, norm, scale = (row_w, None, t.weight) if conf is None else (base_w * conf[t.index], base_w.sum(), 1.0)
        if t.same_tokenizer:
            part = kd_loss(logits, tl, weights=w, normalizer=norm, **common)
        elif r.vocab_projections is not None:
            view = batch.views[t.index]
            part, parts[f"projection_ce/{t.name}"] = projected_kd(
                logits, tl, view.student_rows.view(1, -1).to(dev), view.teacher_rows.view(1, -1).to(dev),
                r.vocab_projections[str(t.index)], batch.targets.view(1, -1).to(dev), weights=w, normalizer=norm, **common)
        else:
            view = batch.views[t.index]
            s_ids, t_ids = t.vocab_map
            vmap = (s_ids, torch.arange(len(t_ids))) if outs[t.index].shared_only else (s_ids, t_ids)
            part = cross_tokenizer_kd(logits, tl, view.student_rows.view(1, -1).to(dev), view.teacher_rows.view(1, -1).to(dev),
                                      vocab_map=vmap, uld_weight=cfg.cross_tokenizer.uld_weight, weights=w,
                                      normalizer=norm, **common)
        parts[f"kd/{t.name}"] = part.detach()
        kd = kd + scale * part
    parts["kd"] = kd
    return parts


def temperature(cfg: TrainConfig, step: int, total_steps: int) -> float:
    from distillm_edge.training.schedules import temperature_at

    tc = cfg.temperature
    schedule = {"progressive": "exponential"}.get(tc.schedule, tc.schedule)
    return temperature_at(step, schedule=schedule, start=tc.initial, floor=tc.floor, decay_steps=tc.steps or total_steps)


def accumulate(r: Run, batches: list[Batch], tau: float) -> tuple[dict[str, float], int, int]:
    """Forward + backward over one optimizer step's micro-batches (gradients left in ``.grad``).

    Returns (the step's loss parts, averaged over micro-batches; counted target tokens; input tokens).
    """
    acc, n = r.accelerator, len(batches)
    sums: dict[str, float] = {}
    tokens = seen = 0
    for a, batch in enumerate(batches):
        sync = a == n - 1
        with contextlib.nullcontext() if sync else acc.no_sync(r.student), acc.autocast():
            parts = compute_loss(r, batch, tau)
            acc.backward(parts["loss"] / n)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) / n
        tokens += batch.tokens
        seen += int(batch.attention_mask.sum())
    return sums, tokens, seen


def step_batches(r: Run, micro: int, world: int, rank: int, pads: dict[int, int], student_pad: int) -> list[Batch]:
    """This process's micro-batches of the optimizer step starting at global micro-batch ``micro``."""
    return [collate([r.train_examples[i] for i in r.plan[micro + a * world + rank]], student_pad, pads)
            for a in range(r.cfg.grad_accum)]
