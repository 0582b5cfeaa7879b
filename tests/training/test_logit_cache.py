"""The loss from cached top-k teacher rows (``teachers/cache.py``): against the online losses and a naive
fp64 reference of the coarsened (top-k + one tail bucket) divergence, with gradients; the tail interpolation.

Run: ``pytest tests/training/test_logit_cache.py``.
"""

from __future__ import annotations

import pytest
import torch

from distillm_edge.errors import UserError
from distillm_edge.teachers.cache import (
    TEMPERATURES,
    CachedRows,
    cached_kd_loss,
    summarize_rows,
    tail_at,
    tail_mass,
)
from distillm_edge.training.cross_tokenizer import cross_tokenizer_kd
from distillm_edge.training.losses import KINDS, kd_loss


def rows_from(teacher: torch.Tensor, k: int, shared_ids: torch.Tensor | None = None) -> CachedRows:
    """What the cache stores for teacher logits [n, V], as rows 0..n-1 of the student."""
    s = summarize_rows(teacher, k, TEMPERATURES, shared_ids)
    tail = s["tail"] if shared_ids is None else s["shared_tail"]
    return CachedRows(torch.arange(teacher.shape[0]), s["top_ids"].long(), s["top_logp"].float(), tail, TEMPERATURES)


def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * (a.clamp_min(1e-300).log() - b.clamp_min(1e-300).log())).sum()


def naive_divergence(p, q, kind, beta, skew):
    """The divergences of ``losses.KINDS`` written from their definitions."""
    if kind == "forward_kl":
        return kl(p, q)
    if kind == "reverse_kl":
        return kl(q, p)
    if kind == "jsd":
        m = beta * p + (1 - beta) * q
        return beta * kl(p, m) + (1 - beta) * kl(q, m)
    if kind == "skew_kl":
        return kl(p, skew * p + (1 - skew) * q)
    return kl(q, skew * q + (1 - skew) * p)


def naive_bucket(student, teacher, k, tau, kind="forward_kl", beta=0.5, skew=0.1, vocab_map=None):
    """Mean over rows of tau^2 * D(p_coarse || q_coarse) in fp64, built from full logits."""
    top = teacher.topk(min(k, teacher.shape[-1]), dim=-1).indices  # chosen at temperature 1, teacher vocabulary
    s, t = student.double() / tau, teacher.double() / tau
    if vocab_map is not None:
        s_ids, t_ids = vocab_map
        where = {int(x): i for i, x in enumerate(t_ids)}
        s, t = s[:, s_ids], t[:, t_ids]
        top = [[where[int(x)] for x in row if int(x) in where] for row in top]
    else:
        top = top.tolist()
    lq, lp = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    losses = []
    for r, idx in enumerate(top):
        idx = torch.tensor(idx, dtype=torch.long)
        p = torch.cat([lp[r, idx].exp(), (1 - lp[r, idx].exp().sum()).clamp_min(0).view(1)])
        q = torch.cat([lq[r, idx].exp(), (1 - lq[r, idx].exp().sum()).clamp_min(1e-300).view(1)])
        losses.append(naive_divergence(p, q, kind, beta, skew) * tau * tau)
    return torch.stack(losses).mean()


def data(n=6, v=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(n, v, generator=g) * 3.0
    student = torch.randn(n, v, generator=g) * 2.0
    return student, teacher


@pytest.mark.parametrize("tau", [1.0, 2.5, 8.0])
def test_full_top_k_equals_the_online_kd_loss_and_gradient(tau):
    student, teacher = data()
    s1 = student.clone().unsqueeze(0).requires_grad_(True)
    s2 = student.clone().unsqueeze(0).requires_grad_(True)
    online = kd_loss(s1, teacher.unsqueeze(0), temperature=tau)
    cached = cached_kd_loss(s2, rows_from(teacher, k=teacher.shape[1]), temperature=tau)
    online.backward()
    cached.backward()
    assert float(cached.detach()) == pytest.approx(float(online.detach()), rel=2e-3, abs=1e-5)  # fp16 log-probs
    torch.testing.assert_close(s2.grad, s1.grad, atol=2e-4, rtol=2e-2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tau", [1.0, 2.0, 6.0])
def test_top_k_matches_the_naive_bucketed_divergence_and_its_gradient(kind, tau):
    student, teacher = data(seed=1)
    s1 = student.clone().double().requires_grad_(True)
    ref = naive_bucket(s1, teacher, 8, tau, kind, beta=0.3, skew=0.2)
    ref.backward()
    s2 = student.clone().unsqueeze(0).requires_grad_(True)
    got = cached_kd_loss(s2, rows_from(teacher, k=8), temperature=tau, kind=kind, beta=0.3, skew=0.2)
    got.backward()
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=3e-3, abs=1e-5)
    torch.testing.assert_close(s2.grad[0].double(), s1.grad, atol=3e-4, rtol=3e-2)


def test_top_k_bucketed_kl_never_exceeds_the_online_kl():
    student, teacher = data(seed=2, v=300)
    for tau in (1.0, 3.0, 8.0):
        online = float(kd_loss(student.unsqueeze(0), teacher.unsqueeze(0), temperature=tau))
        for k in (1, 8, 64):
            assert float(cached_kd_loss(student.unsqueeze(0), rows_from(teacher, k), temperature=tau)) <= online + 1e-6


def test_cross_tokenizer_shared_vocabulary_variant():
    student, teacher = data(seed=3, v=120)  # student vocab 120; teacher vocab 150, 70 shared entries
    teacher = torch.cat([teacher, torch.randn(6, 30) * 3], dim=1)
    g = torch.Generator().manual_seed(0)
    s_ids = torch.randperm(120, generator=g)[:70].sort().values
    t_ids = torch.randperm(150, generator=g)[:70]
    vmap = (s_ids, t_ids)
    pos = torch.arange(6).view(1, -1)
    for tau in (1.0, 4.0):
        s1 = student.clone().unsqueeze(0).requires_grad_(True)
        online = cross_tokenizer_kd(s1, teacher.unsqueeze(0), pos, pos, vocab_map=vmap, uld_weight=0.0, temperature=tau)
        online.backward()
        s2 = student.clone().unsqueeze(0).requires_grad_(True)
        full = cached_kd_loss(s2, rows_from(teacher, 150, t_ids), temperature=tau, vocab_map=vmap)
        full.backward()
        assert float(full.detach()) == pytest.approx(float(online.detach()), rel=2e-3)
        torch.testing.assert_close(s2.grad, s1.grad, atol=2e-4, rtol=2e-2)
        assert s2.grad[0][:, [i for i in range(120) if i not in set(s_ids.tolist())]].abs().max() == 0
        part = cached_kd_loss(student.unsqueeze(0), rows_from(teacher, 10, t_ids), temperature=tau, vocab_map=vmap)
        assert float(part) == pytest.approx(float(naive_bucket(student, teacher, 10, tau, vocab_map=vmap)), rel=3e-3)


def test_weights_subsets_and_empty_rows():
    student, teacher = data(n=5, seed=4)
    rows = rows_from(teacher, 16)
    logits = torch.cat([torch.randn(1, 3, 80), student.unsqueeze(0)], dim=1)  # 8 student rows, the cache covers 3..7
    rows.student_rows = rows.student_rows + 3
    w = torch.tensor([[9.0, 9.0, 9.0, 1.0, 2.0, 0.0, 1.0, 1.0]])
    got = cached_kd_loss(logits, rows, temperature=2.0, weights=w)
    per = torch.stack([cached_kd_loss(student[i : i + 1].unsqueeze(0), CachedRows(torch.tensor([0]), rows.top_ids[i : i + 1],
                                                                                rows.top_logp[i : i + 1], rows.tail[i : i + 1],
                                                                                TEMPERATURES), temperature=2.0) for i in range(5)])
    assert float(got) == pytest.approx(float((per * w[0, 3:]).sum() / w[0, 3:].sum()), rel=1e-5)
    empty = CachedRows(torch.zeros(0, dtype=torch.long), rows.top_ids[:0], rows.top_logp[:0], rows.tail[:0], TEMPERATURES)
    x = logits.clone().requires_grad_(True)
    loss = cached_kd_loss(x, empty, temperature=1.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and x.grad.abs().max() == 0


def test_tail_interpolation_between_grid_temperatures():
    # a Zipf-like teacher over 49k entries (log-probs spread over ~15 nats, as real LM tails) and a wide Gaussian one
    v = 49152
    torch.manual_seed(0)
    zipf = -1.1 * torch.log(torch.arange(1, v + 1, dtype=torch.float64)) + 0.3 * torch.randn(v, dtype=torch.float64)
    for logits in (zipf.float().view(1, -1), torch.randn(1, v) * 6):
        s = summarize_rows(logits, 64, TEMPERATURES)
        lp = torch.log_softmax(logits.double(), -1)
        rest = lp.scatter(1, s["top_ids"].long(), float("-inf"))
        for tau in (1.0, 1.2, 1.75, 2.5, 3.5, 5.0, 6.0, 7.0, 8.0):
            exact = float(torch.logsumexp(rest / tau, -1))
            assert float(tail_at(s["tail"], TEMPERATURES, tau)) == pytest.approx(exact, abs=2e-3), tau
    with pytest.raises(UserError, match="outside the cached range"):
        tail_at(s["tail"], TEMPERATURES, 0.5)


def test_tail_mass_diagnostic_is_the_probability_outside_the_top_k():
    student, teacher = data(seed=5, v=100)
    s = summarize_rows(teacher, 10, TEMPERATURES)
    mass = tail_mass(s["top_ids"], s["top_logp"], s["tail"], TEMPERATURES)
    for g, tau in enumerate(TEMPERATURES):
        p = torch.softmax(teacher.double() / tau, -1)
        want = float((1 - p.gather(1, s["top_ids"].long()).sum(-1)).sum())
        assert mass[g] == pytest.approx(want, rel=2e-3), tau
    assert mass == sorted(mass)  # hotter: more mass outside the top-k
    full = summarize_rows(teacher, 100, TEMPERATURES)
    assert max(tail_mass(full["top_ids"], full["top_logp"], full["tail"], TEMPERATURES)) == 0.0
