"""Staged curriculum: stage order, replay share and source, every example seen ``epochs`` times, determinism.

Run: ``pytest tests/training/test_curriculum.py``.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from distillm_edge.errors import UserError
from distillm_edge.training.curriculum import curriculum_batches, curriculum_order, describe, micro_batches_of


def difficulties(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.choice([1, 2, 2, 3, 4]) for _ in range(n)]


def test_phases_walk_the_stages_in_order_and_new_samples_are_from_the_phase_stage():
    diff = difficulties(200)
    order = curriculum_order(diff, seed=3, epochs=2, replay=0.25)
    assert list(order.stages) == sorted(order.stages)  # 1 -> 2 -> 3 -> 4, never back
    assert set(order.stages) == {1, 2, 3, 4}
    for i, s, rep in zip(order.indices, order.stages, order.replayed):
        if rep:
            assert diff[i] < s  # replay only from earlier stages
        else:
            assert diff[i] == s
    new = Counter(i for i, rep in zip(order.indices, order.replayed) if not rep)
    assert new == Counter({i: 2 for i in range(len(diff))})  # each example exactly `epochs` times as new


@pytest.mark.parametrize("replay", [0.0, 0.1, 0.3, 0.5])
def test_replay_share_per_phase_and_evenly_spread(replay):
    diff = difficulties(300, seed=1)
    order = curriculum_order(diff, seed=0, epochs=1, replay=replay)
    rows = {r["stage"]: r for r in describe(order)}
    assert rows[1]["replayed"] == 0  # nothing earlier to replay
    for s in (2, 3, 4):
        n_new = rows[s]["samples"] - rows[s]["replayed"]
        assert rows[s]["replayed"] == round(n_new * replay / (1 - replay))
        assert abs(rows[s]["replay_share"] - replay) <= 1 / rows[s]["samples"] + 1e-9
    # evenly spread: any window of 20 samples inside a phase holds 20 * replay +- 1 replayed ones (+ rounding)
    for s in (2, 3, 4):
        flags = [rep for st, rep in zip(order.stages, order.replayed) if st == s]
        for start in range(0, len(flags) - 20):
            assert abs(sum(flags[start : start + 20]) - 20 * replay) <= 1.5


def test_replay_draws_cycle_through_all_earlier_examples_before_repeating():
    diff = [1] * 5 + [2] * 40
    order = curriculum_order(diff, seed=0, epochs=1, replay=0.5)
    drawn = [i for i, rep in zip(order.indices, order.replayed) if rep]
    assert len(drawn) == 40
    for k in range(0, 40, 5):  # each cycle of 5 draws is a permutation of stage 1's examples
        assert sorted(drawn[k : k + 5]) == [0, 1, 2, 3, 4]


def test_deterministic_given_seed_and_different_across_seeds():
    diff = difficulties(120)
    a = curriculum_order(diff, seed=7, epochs=2, replay=0.2)
    assert a == curriculum_order(diff, seed=7, epochs=2, replay=0.2)
    assert a.indices != curriculum_order(diff, seed=8, epochs=2, replay=0.2).indices
    # epochs are reshuffled: stage 2's two passes differ in order
    two = [i for i, s, rep in zip(a.indices, a.stages, a.replayed) if s == 2 and not rep]
    half = len(two) // 2
    assert sorted(two[:half]) == sorted(two[half:]) and two[:half] != two[half:]


def test_micro_batches_never_span_two_stages_and_cover_the_order():
    diff = difficulties(101)
    order = curriculum_order(diff, seed=0, epochs=1, replay=0.2)
    plan = micro_batches_of(order, 8)
    assert [i for b in plan.batches for i in b] == list(order.indices)
    assert all(1 <= len(b) <= 8 for b in plan.batches)
    pos = 0
    for batch, stage, rep in zip(plan.batches, plan.stages, plan.replayed):
        assert set(order.stages[pos : pos + len(batch)]) == {stage}
        assert rep == sum(order.replayed[pos : pos + len(batch)])
        pos += len(batch)
    assert curriculum_batches(diff, 8, seed=0, replay=0.2) == plan


def test_missing_stages_are_skipped_and_bad_input_is_named():
    order = curriculum_order([4, 2, 4, 2], seed=0, replay=0.5)
    assert [s for s in order.stages] == [2, 2, 4, 4, 4, 4]
    with pytest.raises(UserError, match="example r9: difficulty 0"):
        curriculum_order([1, 0], seed=0, ids=["r1", "r9"])
    with pytest.raises(UserError, match="curriculum_replay 1.0"):
        curriculum_order([1, 2], seed=0, replay=1.0)
    assert len(curriculum_order([], seed=0)) == 0
