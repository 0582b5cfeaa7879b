"""Sequence packing: several examples in one row, each attending only to itself, so no step pays for padding.

A right-padded batch of B examples computes B × (longest length) positions; on a CPU every pad
position costs as much as a real one. Here a micro-batch is **one row** holding consecutive
examples of the training order up to a token budget (``max_tokens``), with ``position_ids``
restarting at 0 for each example and **no attention mask**: transformers (≥ 5.0,
``masking_utils.find_packed_sequence_indices``) then sees the position resets and builds a
block-diagonal causal mask (sdpa and eager; sliding-window layers too), so attention never
crosses an example boundary and every example's logits equal those of the example run alone
(``tests/training/test_packing.py`` checks this against unpacked runs of a tiny Llama). Two
conditions: pass ``attention_mask=None`` and ``use_cache=False`` (a KV cache disables the
packed-sequence detection) — :meth:`PackedBatch.model_inputs` returns exactly that.

- :func:`pack_order` cuts a training order into packs greedily, keeping the order (shuffle and
  curriculum stages stay as planned; ``boundaries`` such as curriculum stages are never
  crossed); an example longer than the budget gets a pack of its own.
- :func:`collate_packed` builds the row from the per-example ``batches.collate`` of each example,
  concatenated: the result is a ``batches.Batch`` with one row (``loss_mask``, flat ``targets``,
  ``row_sample`` = example index inside the pack, so per-sample weights work unchanged) and the
  teacher views of other-tokenizer teachers packed the same way (their own position ids), plus
  the position ids.

In the trainer (``packing: true``, ``max_tokens_per_batch``; ``batch_size`` must be 1): setup cuts
the planned order (shuffled, or curriculum stages, never mixed in one pack; epochs likewise) with
:func:`packed_plan`; each micro-batch is one packed row, whose ``Batch`` carries ``position_ids``
(and each other-tokenizer view its own), which ``batches.model_inputs`` turns into the models'
inputs for the student and the online teachers; cached teachers read rows as for any batch. Losses
are normalized by the step's counted tokens, so packs of different sizes weigh right. MFU counts
each packed example as if run alone (``step.sequences``). Attention alignment is refused with
packing (its maps are not compared on packed rows yet).
``tests/training/test_trainer_packing.py``: a packed step's gradients and losses equal the same
examples as separate micro-batches (same- and cross-tokenizer teachers).

Cost on a CPU: with transformers' block-diagonal mask torch's CPU attention kernels compute the
masked full square of the row, so a row of n examples pays ~2n x the attention of running them
apart. The trainer therefore runs the student's and the online teachers' attention per packed
example (``packed_attention.py``: the same numbers, no masked square); the models alone, outside
the trainer, still see the block-diagonal mask that this module's docstring describes.

Test: ``pytest tests/training/test_packing.py``; benchmark: ``python benchmarks/train_step.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from distillm_edge.errors import UserError
from distillm_edge.training.batches import Batch, Example, TeacherView, collate


@dataclass
class PackedBatch:
    """One packed row: a ``Batch`` of shape [1, L] plus position ids that restart per example."""

    batch: Batch
    position_ids: torch.Tensor  # [1, L]
    lengths: tuple[int, ...]  # student tokens of each packed example, in order
    teacher_position_ids: dict[int, torch.Tensor]  # teacher index -> [1, Lt]

    def model_inputs(self, device: torch.device | str | None = None) -> dict:
        """Keyword arguments for a Hugging Face causal LM: block-diagonal attention from the position ids."""
        return {"input_ids": self.batch.input_ids.to(device), "position_ids": self.position_ids.to(device),
                "attention_mask": None, "use_cache": False}

    def teacher_inputs(self, index: int, device: torch.device | str | None = None) -> dict:
        """The same for the packed view of the other-tokenizer teacher ``index``."""
        return {"input_ids": self.batch.views[index].input_ids.to(device),
                "position_ids": self.teacher_position_ids[index].to(device), "attention_mask": None, "use_cache": False}

    @property
    def tokens(self) -> int:
        return self.batch.tokens


def pack_order(order: Sequence[int], lengths: Sequence[int], max_tokens: int, *,
               boundaries: Sequence[int] | None = None) -> list[list[int]]:
    """Consecutive runs of ``order`` whose lengths sum to at most ``max_tokens`` (greedy, order kept).

    ``boundaries[i]`` labels position i of ``order`` (e.g. its curriculum stage): a pack never
    holds two labels. An example longer than ``max_tokens`` is packed alone.
    """
    if max_tokens < 1:
        raise UserError(f"max_tokens_per_batch {max_tokens}: must be >= 1 (e.g. 1024).")
    if boundaries is not None and len(boundaries) != len(order):
        raise ValueError(f"boundaries has {len(boundaries)} labels for an order of {len(order)}")
    packs: list[list[int]] = []
    current: list[int] = []
    used = 0
    label = None
    for pos, i in enumerate(order):
        n = int(lengths[i])
        here = None if boundaries is None else boundaries[pos]
        if current and (used + n > max_tokens or here != label):
            packs.append(current)
            current, used = [], 0
        current.append(i)
        used += n
        label = here
    if current:
        packs.append(current)
    return packs


def packed_plan(plan: Sequence[Sequence[int]], labels: Sequence[int] | None, lengths: Sequence[int],
                max_tokens: int) -> tuple[list[list[int]], tuple[int, ...] | None]:
    """The trainer's micro-batch plan (single examples, in training order) cut into packs.

    ``labels``: one per plan entry (a curriculum stage, or an epoch number); a pack never mixes two.
    Returns the packs and, when ``labels`` is given, each pack's label.
    """
    order = [i for b in plan for i in b]
    if labels is not None:
        labels = [lab for b, lab in zip(plan, labels, strict=True) for _ in b]
    packs = pack_order(order, lengths, max_tokens, boundaries=labels)
    if labels is None:
        return packs, None
    out, pos = [], 0
    for p in packs:
        out.append(labels[pos])
        pos += len(p)
    return packs, tuple(out)


def _positions(lengths: Sequence[int]) -> torch.Tensor:
    return torch.cat([torch.arange(n) for n in lengths]).view(1, -1)


def _cat_views(parts: Sequence[TeacherView], student_rows_before: Sequence[int],
               student_tokens_before: Sequence[int]) -> TeacherView:
    t_before = [0]
    keep_before = [0]
    eval_before = [0]
    for v in parts[:-1]:
        t_before.append(t_before[-1] + v.input_ids.shape[1])
        keep_before.append(keep_before[-1] + int(v.keep.sum()))
        eval_before.append(eval_before[-1] + int(v.eval_keep.sum()))

    def cat(name: str, offsets: Sequence[int] | None = None) -> torch.Tensor:
        tensors = [getattr(v, name) for v in parts]
        if offsets is not None:
            tensors = [x + o for x, o in zip(tensors, offsets)]
        return torch.cat(tensors, dim=-1)

    return TeacherView(
        input_ids=cat("input_ids"), attention_mask=cat("attention_mask"), keep=cat("keep"),
        student_rows=cat("student_rows", student_rows_before), teacher_rows=cat("teacher_rows", keep_before),
        student_pos=cat("student_pos", student_tokens_before), teacher_pos=cat("teacher_pos", t_before),
        eval_keep=cat("eval_keep"), eval_teacher_rows=cat("eval_teacher_rows", eval_before),
        target_rows=cat("target_rows", eval_before), targets=cat("targets"),
    )


def collate_packed(examples: Sequence[Example], pad_id: int, teacher_pad_ids: Mapping[int, int]) -> PackedBatch:
    """Pack ``examples`` into one row (see the module docstring)."""
    if not examples:
        raise ValueError("collate_packed needs at least one example")
    singles = [collate([e], pad_id, teacher_pad_ids) for e in examples]
    lengths = [int(b.input_ids.shape[1]) for b in singles]
    rows_before, tokens_before = [0], [0]
    for b, n in zip(singles[:-1], lengths[:-1]):
        rows_before.append(rows_before[-1] + b.tokens)
        tokens_before.append(tokens_before[-1] + n)
    views = {k: _cat_views([b.views[k] for b in singles], rows_before, tokens_before) for k in teacher_pad_ids}
    batch = Batch(
        input_ids=torch.cat([b.input_ids for b in singles], dim=1),
        attention_mask=torch.cat([b.attention_mask for b in singles], dim=1),
        loss_mask=torch.cat([b.loss_mask for b in singles], dim=1),
        targets=torch.cat([b.targets for b in singles]),
        row_sample=torch.cat([torch.full_like(b.row_sample, j) for j, b in enumerate(singles)]),
        specialties=tuple(e.specialty for e in examples),
        difficulties=tuple(e.difficulty for e in examples),
        views=views,
    )
    t_pos = {k: _positions([b.views[k].input_ids.shape[1] for b in singles]) for k in teacher_pad_ids}
    batch.position_ids = _positions(lengths)  # the trainer's models read these (batches.model_inputs)
    for k, pos in t_pos.items():
        views[k].position_ids = pos
    return PackedBatch(batch, batch.position_ids, tuple(lengths), t_pos)


def padding_share(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of computed positions that are padding when each micro-batch is right-padded to its longest example."""
    real = sum(lengths[i] for b in batches for i in b)
    computed = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return 1.0 - real / computed if computed else 0.0
