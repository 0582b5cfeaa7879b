"""Staged curriculum: the research's four difficulty stages, in order, with a share of earlier stages replayed.

Stages are the records' ``difficulty`` tags (``data/tagging.py``, :data:`DIFFICULTY_STAGES`):
1 basic anatomy → 2 clinical knowledge → 3 differential diagnosis → 4 treatment planning. Unlike
``batches.epoch_order(curriculum=True)`` (each epoch sorted by stage, no replay), this is *staged
sampling* over the whole run: stage 1's examples for all ``epochs``, then stage 2's, and so on,
so each stage is a phase of training. Inside the phase of stage s a share ``replay`` of the
samples comes from the earlier stages (< s), so the student does not forget them:

- *new* samples: every example of stage s exactly ``epochs`` times, reshuffled per epoch;
- *replayed* samples: ``round(n_new * replay / (1 - replay))`` of them (so that they are
  ``replay`` of the phase), drawn without replacement from a shuffled cycle over all earlier
  stages' examples (reshuffled each time the cycle is used up), spread evenly through the phase
  (Bresenham spacing: any window of w samples holds ``w * replay ± 1`` of them);
- the first non-empty stage has nothing to replay; an empty stage is skipped.

Everything is a pure function of (difficulties, seed, epochs, replay): the flat order and its
stage labels are reproduced exactly on resume, so the data position of a run stays one integer.

Integration (the trainer, once issue 9's refactor lands):

- config: ``curriculum: bool`` (exists) plus ``curriculum_replay: float = 0.2`` (0 ≤ r < 1);
- setup: ``order = curriculum_order([e.difficulty for e in train_examples], seed=cfg.seed,
  epochs=cfg.epochs, replay=cfg.curriculum_replay)`` then either
  ``plan = micro_batches_of(order, cfg.batch_size)`` (fixed batch size; replaces
  ``batches.micro_batches``) or ``packing.pack_order(order.indices, lengths, max_tokens,
  boundaries=order.stages)`` (token budget; a pack never spans two stages);
- per step: log ``stage = plan.stages[state.micro]`` (and ``replayed`` share) in the step line /
  metrics.jsonl.

Test: ``pytest tests/training/test_curriculum.py``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from distillm_edge.data.records import DIFFICULTY_STAGES
from distillm_edge.errors import UserError

STAGES: tuple[int, ...] = tuple(sorted(DIFFICULTY_STAGES))


@dataclass(frozen=True)
class CurriculumOrder:
    """A run's samples in training order: example index, its phase (stage) and whether it is replayed."""

    indices: tuple[int, ...]
    stages: tuple[int, ...]  # the phase each sample belongs to (not the sample's own difficulty when replayed)
    replayed: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class CurriculumPlan:
    """Micro-batches in training order, each with its stage and how many of its samples are replayed."""

    batches: tuple[tuple[int, ...], ...]
    stages: tuple[int, ...]
    replayed: tuple[int, ...]


def check_stage(difficulty: int, where: str = "") -> int:
    """``difficulty`` as a stage (1-4); a UserError naming ``where`` (e.g. a record id) otherwise."""
    if difficulty not in DIFFICULTY_STAGES:
        stages = ", ".join(f"{k} {v}" for k, v in DIFFICULTY_STAGES.items())
        raise UserError(f"{where or 'record'}: difficulty {difficulty!r} is not a curriculum stage ({stages}); "
                        "re-run `distillm-edge data prepare` to tag it, or turn the curriculum off.")
    return int(difficulty)


def check_replay(replay: float) -> float:
    if not 0.0 <= replay < 1.0:
        raise UserError(f"curriculum_replay {replay}: the share of earlier stages in a phase must be in [0, 1) "
                        "(e.g. 0.2; 0 = no replay).")
    return float(replay)


def _rng(seed: int, *salt: int) -> random.Random:
    value = seed
    for s in salt:
        value = value * 1_000_003 + s
    return random.Random(value)


def curriculum_order(difficulties: Sequence[int], *, seed: int, epochs: int = 1, replay: float = 0.2,
                     ids: Sequence[str] | None = None) -> CurriculumOrder:
    """The whole run's samples, stage by stage (see the module docstring). ``ids`` name examples in errors."""
    check_replay(replay)
    if epochs < 1:
        raise UserError(f"epochs {epochs}: must be >= 1.")
    by_stage: dict[int, list[int]] = {s: [] for s in STAGES}
    for i, d in enumerate(difficulties):
        by_stage[check_stage(d, f"example {ids[i]}" if ids is not None else f"example {i}")].append(i)
    indices: list[int] = []
    stages: list[int] = []
    replayed: list[bool] = []
    earlier: list[int] = []
    for s in STAGES:
        members = by_stage[s]
        if not members:
            continue
        new: list[int] = []
        for epoch in range(epochs):
            chunk = list(members)
            _rng(seed, s, epoch).shuffle(chunk)
            new.extend(chunk)
        n_rep = round(len(new) * replay / (1.0 - replay)) if earlier else 0
        pool_rng, pool = _rng(seed, s, 1_000_000), []
        total = len(new) + n_rep
        it = iter(new)
        for slot in range(total):
            if (slot + 1) * n_rep // total > slot * n_rep // total:  # Bresenham: evenly spread replay slots
                if not pool:
                    pool = list(earlier)
                    pool_rng.shuffle(pool)
                indices.append(pool.pop())
                replayed.append(True)
            else:
                indices.append(next(it))
                replayed.append(False)
            stages.append(s)
        earlier.extend(members)
    return CurriculumOrder(tuple(indices), tuple(stages), tuple(replayed))


def micro_batches_of(order: CurriculumOrder, batch_size: int) -> CurriculumPlan:
    """Cut ``order`` into micro-batches of ``batch_size`` samples; a batch never spans two stages."""
    if batch_size < 1:
        raise UserError(f"batch_size {batch_size}: must be >= 1.")
    batches, stages, replayed = [], [], []
    start = 0
    n = len(order)
    while start < n:
        stage = order.stages[start]
        end = start
        while end < n and end - start < batch_size and order.stages[end] == stage:
            end += 1
        batches.append(order.indices[start:end])
        stages.append(stage)
        replayed.append(sum(order.replayed[start:end]))
        start = end
    return CurriculumPlan(tuple(batches), tuple(stages), tuple(replayed))


def curriculum_batches(difficulties: Sequence[int], batch_size: int, *, seed: int, epochs: int = 1,
                       replay: float = 0.2) -> CurriculumPlan:
    """:func:`curriculum_order` cut into micro-batches of ``batch_size`` (the drop-in for ``micro_batches``)."""
    return micro_batches_of(curriculum_order(difficulties, seed=seed, epochs=epochs, replay=replay), batch_size)


def describe(order: CurriculumOrder) -> list[dict]:
    """Per stage: its name, samples, replayed samples and their share (for the run log)."""
    out = []
    for s in STAGES:
        n = sum(1 for x in order.stages if x == s)
        if not n:
            continue
        r = sum(1 for x, rep in zip(order.stages, order.replayed) if x == s and rep)
        out.append({"stage": s, "name": DIFFICULTY_STAGES[s], "samples": n, "replayed": r, "replay_share": r / n})
    return out
