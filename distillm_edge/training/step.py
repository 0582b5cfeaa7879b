"""One optimizer step's math: the loss of a micro-batch and the gradient accumulation over a step.

- :func:`compute_loss`: every loss term of one micro-batch; ``loss`` is the total that is
  backpropagated: ``(1 - kd_weight) CE + kd_weight KD`` (+ hidden-state, attention and L2 terms,
  and the learned vocabulary projections' own cross-entropy, which trains only them);
- :func:`distillation`: the teachers' KD losses combined (static or confidence weighting);
- :func:`accumulate`: forward + backward of a step's micro-batches (DDP gradient sync only on
  the last one); returns the step's logged loss parts and token counts;
- :func:`step_counts`: every loss term's denominator over the *whole* optimizer step, summed
  over processes (one all-reduce). Each micro-batch divides its summed loss by these, so
  ``grad_accum`` micro-batches on N processes give the gradient of one batch of all their
  sequences: tokens weigh alike whatever the sequence lengths, and a per-sample (specialty)
  weight counts at batch size 1 too. Under DDP, which averages gradients over processes, the
  backpropagated loss is multiplied by the number of processes;
- :func:`temperature`: the distillation temperature at a step;
- :func:`step_flops`: the model FLOPs of a step's micro-batches (the student's training step and
  the teachers' forward passes, ``mfu.py``'s counts), for the per-step MFU the trainer logs.

The trainer (``trainer.py``) owns the loop, the optimizer step and checkpoints; this module owns
what one step computes. Test: ``pytest tests/training/test_trainer.py tests/training/test_step.py``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

from distillm_edge.training.batches import Batch, collate, model_inputs
from distillm_edge.training.config import TrainConfig
from distillm_edge.training.teachers import teacher_forward

if TYPE_CHECKING:
    from distillm_edge.training.trainer import Run


def row_weights(r: Run, batch: Batch) -> torch.Tensor | None:
    """Per-row loss weights [N] (each sample's specialty weight on its rows), or None (all 1)."""
    from distillm_edge.training.losses import specialty_weights

    if r.cfg.specialty_weights is None:
        return None
    per_sample = specialty_weights(batch.specialties, r.cfg.specialty_weights, r.specialty_counts, default=1.0)
    return per_sample[batch.row_sample]


def batch_counts(r: Run, batch: Batch) -> dict[str, float]:
    """Each loss term's denominator in one micro-batch (what a per-batch mean would divide by).

    ``rows``: summed row weights (CE, same-tokenizer KD, confidence-weighted KD); ``rows/<k>``: the
    same over the rows aligned with cross-tokenizer teacher k; ``aligned/<k>``: those rows unweighted
    (the vocabulary projection's CE); ``hidden``: rows compared by hidden-state alignment;
    ``attention``: causal (query, key) pairs compared by attention alignment.
    """
    cfg = r.cfg
    w = row_weights(r, batch)
    w = torch.ones(batch.tokens) if w is None else w
    out = {"rows": float(w.sum())}
    for t in r.teachers:
        if not t.same_tokenizer:
            rows = (batch.views[t.index] if t.cache is None else batch.cached[t.index]).student_rows
            out[f"rows/{t.index}"] = float(w[rows].sum())
            out[f"aligned/{t.index}"] = float(rows.numel())
    if r.hidden_map:
        t = r.teachers[cfg.hidden.teacher]
        out["hidden"] = float(batch.tokens if t.same_tokenizer else batch.views[t.index].student_rows.numel())
    if r.attention_map:
        t = r.teachers[cfg.attention.teacher]
        if batch.position_ids is not None:  # a packed row: each example's causal pairs (attention never crosses one)
            n = torch.tensor([k for k, _ in sequences(batch.attention_mask, batch.loss_mask, batch.position_ids)])
        else:
            n = batch.attention_mask.sum(1) if t.same_tokenizer else (batch.views[t.index].student_pos >= 0).sum(1)
        out["attention"] = float((n * (n + 1) // 2).sum())
    return out


def step_counts(r: Run, batches: list[Batch]) -> dict[str, float]:
    """:func:`batch_counts` summed over a step's micro-batches and over all processes."""
    counts: dict[str, float] = {}
    for batch in batches:
        for k, v in batch_counts(r, batch).items():
            counts[k] = counts.get(k, 0.0) + v
    if r.accelerator.num_processes > 1:
        keys = sorted(counts)  # the same keys on every process: they depend on the config only
        total = r.accelerator.reduce(torch.tensor([counts[k] for k in keys], dtype=torch.float64,
                                                  device=r.accelerator.device), reduction="sum")
        counts = dict(zip(keys, total.tolist(), strict=True))
    return counts


def compute_loss(r: Run, batch: Batch, tau: float, counts: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """All loss terms of one micro-batch; ``loss`` is the total that is backpropagated.

    ``counts``: the denominators of the whole step (:func:`step_counts`); each term is then this
    micro-batch's share of the step's mean. None: this micro-batch's own means.
    Student logits are computed only at counted positions (``logits_to_keep=loss_mask``) and come
    back as flat rows [1, N, V]; every loss below works on those rows.
    """
    from distillm_edge.training.alignment import attention_loss, hidden_state_loss
    from distillm_edge.training.losses import cross_entropy_loss
    from distillm_edge.training.packed_attention import packed_attention
    from distillm_edge.training.precision import autocast_dtype

    cfg, dev = r.cfg, r.accelerator.device
    counts = counts if counts is not None else batch_counts(r, batch)
    low = r.student_autocast  # the frozen Linears' bf16 copies under autocast (precision.AutocastWeights)
    with (low.active() if low is not None and autocast_dtype(dev) == low.dtype else contextlib.nullcontext(),
          packed_attention(r.accelerator.unwrap_model(r.student), batch.position_ids)):  # attention per packed example
        out = r.student(**model_inputs(batch.input_ids, batch.attention_mask, batch.position_ids, dev),
                        logits_to_keep=batch.loss_mask.to(dev), output_hidden_states=bool(r.hidden_map) or None,
                        output_attentions=bool(r.attention_map) or None)
    vocab = out.logits.shape[-1]
    logits = out.logits.reshape(1, -1, vocab)
    row_w = row_weights(r, batch)
    row_w = None if row_w is None else row_w.view(1, -1).to(dev)
    parts: dict[str, torch.Tensor] = {}
    total = logits.new_zeros((), dtype=torch.float32)
    if cfg.kd_weight < 1.0:
        parts["ce"] = cross_entropy_loss(logits, batch.targets.view(1, -1).to(dev), weights=row_w,
                                         normalizer=counts["rows"])
        total = total + (1.0 - cfg.kd_weight) * parts["ce"]
    if cfg.kd_weight > 0.0 or r.hidden_map or r.attention_map:
        outs = {t.index: teacher_forward(t, batch, student_vocab=vocab,
                                         hidden=bool(r.hidden_map) and t.index == cfg.hidden.teacher,
                                         attentions=bool(r.attention_map) and t.index == cfg.attention.teacher,
                                         shared_only=cfg.cross_tokenizer.shared_only)
                for t in r.teachers if t.cache is None}  # a cached teacher's rows are batch.cached[t.index]
        if cfg.kd_weight > 0.0:
            parts |= distillation(r, batch, logits, outs, row_w, tau, counts)
            total = total + cfg.kd_weight * parts["kd"]
            for key in [k for k in parts if k.startswith("projection_ce/")]:  # trains the vocab projections only
                total = total + parts[key]
        if r.hidden_map:
            t = r.teachers[cfg.hidden.teacher]
            view = None if t.same_tokenizer else batch.views[t.index]
            parts["hidden"] = hidden_state_loss(
                out.hidden_states, outs[t.index].hidden_states, r.hidden_map, batch.loss_mask.to(dev),
                projections=r.projections, positions=None if view is None else (view.student_pos, view.teacher_pos),
                normalizer=counts["hidden"])
            total = total + cfg.hidden.weight * parts["hidden"]
        if r.attention_map:
            t = r.teachers[cfg.attention.teacher]
            view = None if t.same_tokenizer else batch.views[t.index]
            parts["attention"] = attention_loss(
                out.attentions, outs[t.index].attentions, r.attention_map, batch.attention_mask.to(dev),
                positions=None if view is None else (view.student_pos, view.teacher_pos),
                cross_tokenizer=view is not None, heads=cfg.attention.heads, normalizer=counts["attention"])
            total = total + cfg.attention.weight * parts["attention"]
    parts["loss"] = total  # (L2-SP is applied once per optimizer step, as a gradient term: see train)
    return parts


def distillation(r: Run, batch: Batch, logits: torch.Tensor, outs: dict, row_w: torch.Tensor | None,
                 tau: float, counts: dict[str, float]) -> dict[str, torch.Tensor]:
    """``kd``: the teachers' KD losses combined, and each teacher's own (``kd/<name>``, for the logs).

    A teacher with another tokenizer is compared on the shared vocabulary (+ ULD), or with
    ``cross_tokenizer.method: projection`` against its learned vocabulary projection, whose
    cross-entropy comes back as ``projection_ce/<name>`` (not detached: the caller adds it).

    Static weighting: ``sum_k w_k KD_k`` (each KD_k a mean over the rows teacher k covers; the
    denominators come from ``counts``).
    Confidence weighting: per row, teacher k gets ``c_k`` from its entropy (``losses.confidence_weights``,
    the static weights as prior); a cross-tokenizer teacher is only available at aligned rows.
    """
    from distillm_edge.teachers.cache import cached_kd_loss
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
        if t.cache is not None:  # top-k rows from the teacher's cache (teachers/cache.py; no confidence weighting)
            vmap = None if t.same_tokenizer else t.cache.vocab_map
            part = cached_kd_loss(logits, batch.cached[t.index], weights=row_w, vocab_map=vmap, **common,
                                  normalizer=counts["rows"] if t.same_tokenizer else counts[f"rows/{t.index}"])
            parts[f"kd/{t.name}"] = part.detach()
            kd = kd + t.weight * part
            continue
        tl = outs[t.index].logits.to(dev)
        # static: teacher k's own weighted mean, scaled by w_k; confidence: per-row weights, one shared denominator
        own = counts["rows"] if t.same_tokenizer else counts[f"rows/{t.index}"]
        w, norm, scale = (row_w, own, t.weight) if conf is None else (base_w * conf[t.index], counts["rows"], 1.0)
        if t.same_tokenizer:
            part = kd_loss(logits, tl, weights=w, normalizer=norm, **common)
        elif r.vocab_projections is not None:
            view = batch.views[t.index]
            part, parts[f"projection_ce/{t.name}"] = projected_kd(
                logits, tl, view.student_rows.view(1, -1).to(dev), view.teacher_rows.view(1, -1).to(dev),
                r.vocab_projections[str(t.index)], batch.targets.view(1, -1).to(dev), weights=w, normalizer=norm,
                ce_normalizer=counts[f"aligned/{t.index}"], **common)
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

    Returns (the step's loss parts: this process's share of the step's means, to be summed over
    processes; counted target tokens; input tokens). With :func:`micro_batch_threads` > 1 the
    micro-batches run in that many threads at once (:func:`_accumulate_threads`).
    """
    acc, n = r.accelerator, len(batches)
    counts = step_counts(r, batches)
    workers = micro_batch_threads(r, n)
    if workers > 1:
        results = _accumulate_threads(r, batches, tau, counts, workers)
    else:
        scale = float(acc.num_processes)  # DDP averages gradients over processes; the losses are shares of one sum
        results = []
        with acc.autocast():  # one region for the whole step: autocast casts each trainable weight once (precision.py)
            for a, batch in enumerate(batches):
                with contextlib.nullcontext() if a == n - 1 else acc.no_sync(r.student):  # DDP syncs on the last
                    parts = compute_loss(r, batch, tau, counts)
                    acc.backward(parts["loss"] * scale if scale != 1.0 else parts["loss"])
                results.append({k: float(v.detach()) for k, v in parts.items()})
    sums: dict[str, float] = {}
    for parts in results:  # in micro-batch order: the same sums whichever thread ran what
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
    tokens = sum(batch.tokens for batch in batches)
    seen = sum(int(batch.attention_mask.sum()) for batch in batches)
    return sums, tokens, seen


def micro_batch_threads(r: Run, n: int) -> int:
    """How many of a step's ``n`` micro-batches run at once, each in its own thread (1: one after another).

    ``micro_batch_threads: 0`` (auto): two on a CPU run of one process with at least two torch threads
    (each micro-batch in flight holds its activations: two at most by default); DDP (``no_sync`` per
    micro-batch) and GPUs keep one at a time.
    """
    acc, wanted = r.accelerator, r.cfg.micro_batch_threads
    if acc.num_processes > 1 or acc.device.type != "cpu" or n < 2:
        return 1
    return min(n, wanted if wanted else min(2, torch.get_num_threads()))


def _accumulate_threads(r: Run, batches: list[Batch], tau: float, counts: dict[str, float],
                        workers: int) -> list[dict[str, float]]:
    """The micro-batches of one step in ``workers`` threads at once, each with ``1/workers`` of the torch threads.

    On a small CPU one intra-op thread per micro-batch beats all threads per op: the many small kernels of a
    step (norms, activations, losses over rows) scale poorly across threads, and torch releases the GIL
    inside its ops. The math is that of :func:`accumulate`'s loop: the same losses per micro-batch, whose
    gradients add into ``.grad`` (autograd accumulates them under a lock; with two micro-batches the sum is
    the same either way round). Shared state is guarded: the teachers' and student's pre-cast weights
    (``precision.AutocastWeights``) and the packed-row attention switch (``packed_attention``) are
    reference-counted. Autocast, inference mode and grad mode are per thread, so each thread enters them.
    The calling thread runs micro-batch 0, 0 + workers, ...; a failure or Ctrl-C waits for the other
    threads before it propagates (no gradient lands after the caller has moved on).
    """
    from concurrent.futures import ThreadPoolExecutor, wait

    acc = r.accelerator
    total = torch.get_num_threads()
    per = max(1, total // workers)

    def run(indices: list[int]) -> list[tuple[int, dict[str, float]]]:
        torch.set_num_threads(per)  # this thread's own OpenMP team size
        out = []
        with acc.autocast():
            for a in indices:
                parts = compute_loss(r, batches[a], tau, counts)
                acc.backward(parts["loss"])
                out.append((a, {k: float(v.detach()) for k, v in parts.items()}))
        return out

    groups = [list(range(w, len(batches), workers)) for w in range(workers)]
    pool = ThreadPoolExecutor(workers - 1, thread_name_prefix="micro-batch")
    futures = [pool.submit(run, g) for g in groups[1:]]
    try:
        mine = run(groups[0])
        results = dict(mine)
        for f in futures:
            results.update(f.result())
    finally:
        wait(futures)
        pool.shutdown()
        torch.set_num_threads(total)
    return [results[a] for a in range(len(batches))]


def step_batches(r: Run, micro: int, world: int, rank: int, pads: dict[int, int], student_pad: int) -> list[Batch]:
    """This process's micro-batches of the optimizer step starting at global micro-batch ``micro``
    (with the rows of cached teachers attached: ``cached_teachers.attach_rows``)."""
    from distillm_edge.training.cached_teachers import attach_rows
    from distillm_edge.training.packing import collate_packed

    out = []
    for a in range(r.cfg.grad_accum):
        examples = [r.train_examples[i] for i in r.plan[micro + a * world + rank]]
        batch = collate_packed(examples, student_pad, pads).batch if r.cfg.packing else collate(examples, student_pad, pads)
        out.append(attach_rows(r.teachers, batch, examples))
    return out


def sequences(attention_mask: torch.Tensor, counted: torch.Tensor, position_ids: torch.Tensor | None) -> list[tuple[int, int]]:
    """(tokens, counted positions) of each sequence in a batch: one per padded row, or one per example of a
    packed row (its position ids restart at 0 where an example starts)."""
    if position_ids is None:
        return list(zip(attention_mask.sum(dim=1).tolist(), counted.sum(dim=1).tolist(), strict=True))
    starts = (position_ids[0] == 0).nonzero().view(-1).tolist() + [position_ids.shape[1]]
    return [(b - a, int(counted[0, a:b].sum())) for a, b in zip(starts[:-1], starts[1:], strict=True)]


def step_flops(batches: list[Batch], student_shape, teacher_shapes: dict[int, object], same_tokenizer: dict[int, bool]) -> float:
    """Model FLOPs of ``batches``: each sequence's student training FLOPs (padding not counted; the LM head on
    its counted positions; a packed row's examples apart, as if run alone) plus each teacher's forward FLOPs
    on its own view of the sequence."""
    from distillm_edge.training.mfu import sequence_flops

    total = 0.0
    for batch in batches:
        for n, h in sequences(batch.attention_mask, batch.loss_mask, batch.position_ids):
            total += sequence_flops(student_shape, int(n), head_rows=int(h))
            for index, shape in teacher_shapes.items():
                if same_tokenizer[index]:
                    total += sequence_flops(shape, int(n), head_rows=int(h), train=False)
        for index, shape in teacher_shapes.items():
            view = batch.views.get(index)
            if same_tokenizer[index] or view is None:
                continue
            for n, h in sequences(view.attention_mask, view.keep, view.position_ids):
                total += sequence_flops(shape, int(n), head_rows=int(h), train=False)
    return total
