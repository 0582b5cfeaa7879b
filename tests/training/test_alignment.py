"""Tests of hidden-state / attention alignment and the L2 penalties against plain loops.

Run: ``pytest tests/training/test_alignment.py``.
"""

from __future__ import annotations

import pytest
import torch

from distillm_edge.errors import UserError
from distillm_edge.training.alignment import attention_loss, hidden_state_loss, l2_penalty, make_projections


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def attn(b, h, t, seed):
    """Causal row-stochastic attention maps [B, H, T, T]."""
    scores = randn(b, h, t, t, seed=seed).masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1)


B, T = 2, 5


# ----------------------------------------------------------------------------- hidden states


def naive_hidden(hs, ht, layer_map, mask, projections=None):
    losses = []
    for s_layer, t_layer in layer_map.items():
        num, den = 0.0, 0.0
        for b in range(hs[0].shape[0]):
            for t in range(hs[0].shape[1]):
                if not mask[b, t]:
                    continue
                x = hs[s_layer][b, t]
                if projections is not None:
                    x = projections[str(s_layer)](x)
                num = num + ((x - ht[t_layer][b, t]) ** 2).mean()
                den += 1
        losses.append(num / den)
    return sum(losses) / len(losses)


def test_hidden_state_loss_matches_loop_with_projection():
    torch.manual_seed(0)
    hs = [randn(B, T, 8, seed=i) for i in range(3)]
    ht = [randn(B, T, 12, seed=10 + i) for i in range(5)]
    layer_map = {1: 2, 2: 4}
    proj = make_projections(layer_map, 8, 12)
    assert isinstance(proj["1"], torch.nn.Linear) and proj["1"].in_features == 8
    mask = torch.tensor([[True, True, False, True, False], [False, True, True, True, True]])
    got = hidden_state_loss(hs, ht, layer_map, mask, projections=proj)
    want = naive_hidden(hs, ht, layer_map, mask, proj)
    torch.testing.assert_close(got, want)
    got.backward()
    assert proj["1"].weight.grad is not None and proj["1"].weight.grad.abs().sum() > 0


def test_hidden_state_identical_is_zero_and_all_masked_is_zero_with_zero_grads():
    hs = [randn(B, T, 6, seed=1).requires_grad_(True)]
    assert hidden_state_loss(hs, [hs[0].detach().clone()], {0: 0}) == 0
    assert isinstance(make_projections({0: 0}, 6, 6)["0"], torch.nn.Identity)
    proj = make_projections({0: 0}, 6, 4)
    loss = hidden_state_loss(hs, [randn(B, T, 4, seed=2)], {0: 0}, torch.zeros(B, T, dtype=torch.bool),
                             projections=proj)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(hs[0].grad, torch.zeros_like(hs[0])) and not torch.isnan(proj["0"].weight.grad).any()


def test_hidden_state_sample_weights_and_aligned_positions():
    hs, ht = [randn(B, T, 4, seed=3)], [randn(B, T + 2, 4, seed=4)]
    student_pos = torch.tensor([[0, 2, 3], [1, 4, -1]])
    teacher_pos = torch.tensor([[1, 3, 6], [0, 5, -1]])
    got = hidden_state_loss(hs, ht, {0: 0}, positions=(student_pos, teacher_pos), weights=torch.tensor([1.0, 3.0]))
    num = den = 0.0
    for b in range(B):
        for sp, tp in zip(student_pos[b].tolist(), teacher_pos[b].tolist()):
            if sp < 0:
                continue
            w = [1.0, 3.0][b]
            num += w * ((hs[0][b, sp] - ht[0][b, tp]) ** 2).mean()
            den += w
    torch.testing.assert_close(got, num / den)
    with pytest.raises(UserError, match="positions="):
        hidden_state_loss(hs, ht, {0: 0})


def test_hidden_state_errors_name_the_fix():
    hs, ht = [randn(B, T, 4)], [randn(B, T, 6)]
    with pytest.raises(UserError, match="make_projections"):
        hidden_state_loss(hs, ht, {0: 0})
    with pytest.raises(UserError, match="returned 1 hidden states"):
        hidden_state_loss(hs, ht, {3: 0})


# ----------------------------------------------------------------------------- attention


def naive_attention(a_s, a_t, valid):
    """Mean squared difference over heads and causal (key <= query) pairs of valid positions."""
    num, den = 0.0, 0
    for b in range(a_s.shape[0]):
        for h in range(a_s.shape[1]):
            for i in range(a_s.shape[2]):
                for j in range(i + 1):
                    if valid[b, i] and valid[b, j]:
                        num += (a_s[b, h, i, j] - a_t[b, h, i, j]) ** 2
                        den += 1
    return num / den


def test_attention_loss_per_head_matches_loop():
    a_s, a_t = attn(B, 4, T, 1), attn(B, 4, T, 2)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    got = attention_loss([a_s], [a_t], {0: 0}, mask, heads="per_head")
    torch.testing.assert_close(got, naive_attention(a_s, a_t, mask.bool()))
    assert attention_loss([a_s], [a_s.clone()], {0: 0}, heads="per_head") == 0


def test_attention_default_compares_head_averaged_maps():
    """Head i of one model has nothing to do with head i of another: the default compares head means, so a
    teacher whose heads are a permutation of the student's costs nothing (per_head would charge it)."""
    a_s = attn(B, 4, T, 1)
    permuted = a_s[:, [2, 0, 3, 1]]
    assert attention_loss([a_s], [permuted], {0: 0}).item() == pytest.approx(0.0, abs=1e-12)
    assert attention_loss([a_s], [permuted], {0: 0}, heads="per_head") > 1e-3
    a_t = attn(B, 4, T, 2)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    want = naive_attention(a_s.mean(1, keepdim=True), a_t.mean(1, keepdim=True), mask.bool())
    torch.testing.assert_close(attention_loss([a_s], [a_t], {0: 0}, mask), want)


def test_attention_denominator_counts_causal_pairs_only():
    """Causal maps are 0 above the diagonal on both sides; counting those pairs would halve the loss."""
    a_s, a_t = attn(1, 1, T, 3), attn(1, 1, T, 4)
    diff = (a_s - a_t).pow(2)[0, 0]
    want = diff.tril().sum() / (T * (T + 1) / 2)
    torch.testing.assert_close(attention_loss([a_s], [a_t], {0: 0}), want)


def test_attention_per_head_grouping_and_mean():
    a_s, a_t = attn(B, 2, T, 3), attn(B, 4, T, 4)  # 4 teacher heads -> 2 groups of 2
    grouped = torch.stack([a_t[:, 0:2].mean(1), a_t[:, 2:4].mean(1)], 1)
    valid = torch.ones(B, T, dtype=torch.bool)
    torch.testing.assert_close(attention_loss([a_s], [a_t], {0: 0}, heads="per_head"), naive_attention(a_s, grouped, valid))
    a_s3 = attn(B, 3, T, 5)  # 3 vs 4 heads: both averaged to one map
    want = naive_attention(a_s3.mean(1, keepdim=True), a_t.mean(1, keepdim=True), valid)
    torch.testing.assert_close(attention_loss([a_s3], [a_t], {0: 0}, heads="per_head"), want)
    torch.testing.assert_close(attention_loss([a_s], [a_t], {0: 0}, heads="mean"),
                               naive_attention(a_s.mean(1, keepdim=True), a_t.mean(1, keepdim=True), valid))


def test_attention_cross_tokenizer_needs_aligned_positions():
    a_s, a_t = attn(1, 2, 4, 6), attn(1, 2, 6, 7)
    with pytest.raises(UserError, match="aligned positions"):
        attention_loss([a_s], [a_t], {0: 0})
    with pytest.raises(UserError, match="aligned positions"):
        attention_loss([a_s], [attn(1, 2, 4, 8)], {0: 0}, cross_tokenizer=True)
    sp, tp = torch.tensor([[0, 2, 3]]), torch.tensor([[0, 3, 5]])
    got = attention_loss([a_s], [a_t], {0: 0}, positions=(sp, tp), cross_tokenizer=True)

    def sub(a, p):
        m = a[:, :, p][:, :, :, p]
        return m / m.sum(-1, keepdim=True)

    want = naive_attention(sub(a_s, sp[0]).mean(1, keepdim=True), sub(a_t, tp[0]).mean(1, keepdim=True),
                           torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(got, want)


def test_attention_all_masked_is_zero_with_zero_grads():
    a_s = attn(B, 2, T, 9).requires_grad_(True)
    loss = attention_loss([a_s], [attn(B, 2, T, 10)], {0: 0}, torch.zeros(B, T))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(a_s.grad, torch.zeros_like(a_s))


# ----------------------------------------------------------------------------- L2


def test_l2_penalty_plain_and_drift_from_reference():
    lin = torch.nn.Linear(3, 2)
    params = list(lin.parameters())
    want = sum((p.detach() ** 2).sum() for p in params)
    torch.testing.assert_close(l2_penalty(params), want)
    ref = [p.detach().clone() for p in params]
    assert l2_penalty(params, ref) == 0
    with torch.no_grad():
        lin.weight.add_(0.5)
    torch.testing.assert_close(l2_penalty(params, ref), torch.tensor(0.25 * 6))
    l2_penalty(params, ref).backward()
    torch.testing.assert_close(lin.weight.grad, torch.full((2, 3), 1.0))
    with pytest.raises(ValueError, match="reference"):
        l2_penalty(params, ref[:1])
    assert l2_penalty([]) == 0


def test_teacher_tensors_on_another_device_are_moved_to_the_students(monkeypatch):
    """A teacher on another GPU returns hidden states/attentions there; the losses move them to the student's device.
    Stand-in for two GPUs on a CPU machine: the student's tensors on the meta device, the teacher's on the CPU."""
    import torch.fx.experimental._config as fx_config

    monkeypatch.setattr(fx_config, "meta_nonzero_assume_all_nonzero", True)  # nonzero() on meta tensors
    hs = [randn(B, T, 8, seed=i).to("meta") for i in range(2)]
    ht = [randn(B, T, 8, seed=10 + i) for i in range(2)]
    mask = torch.ones(B, T, dtype=torch.bool, device="meta")
    assert hidden_state_loss(hs, ht, {1: 1}, mask).device.type == "meta"
    sp = tp = torch.tensor([[0, 2, 3], [1, 2, 4]])  # positions arrive from the batch, on the CPU
    assert hidden_state_loss(hs, ht, {1: 1}, mask, positions=(sp, tp)).device.type == "meta"
    a_s, a_t = attn(B, 2, T, 1).to("meta"), attn(B, 2, T, 2)
    assert attention_loss([a_s], [a_t], {0: 0}, torch.ones(B, T, device="meta")).device.type == "meta"
    assert attention_loss([a_s], [a_t], {0: 0}, positions=(sp, tp), cross_tokenizer=True).device.type == "meta"
