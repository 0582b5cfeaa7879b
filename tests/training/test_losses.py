"""Tests of the chunked distillation losses against plain full-tensor references written below.

Run: ``pytest tests/training/test_losses.py`` (seconds, CPU).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from distillm_edge.errors import UserError
from distillm_edge.training.losses import (
    KINDS,
    confidence_weights,
    cross_entropy_loss,
    distillation_loss,
    divergence_rows,
    kd_loss,
    multi_teacher_kd,
    normalize_teacher_weights,
    specialty_weights,
    token_entropy,
)

# ----------------------------------------------------------------------------- naive references


def naive_divergence(s, t, kind, tau=1.0, beta=0.5, skew=0.1):
    """Per-token divergence [..] straight from the formulas, in float64, full tensors."""
    p = F.softmax(t.double() / tau, -1)
    q = F.softmax(s.double() / tau, -1)

    def kl(a, b):  # sum a log(a / b) with 0 log 0 = 0
        return torch.where(a > 0, a * (a.log() - b.log()), torch.zeros_like(a)).sum(-1)

    if kind == "forward_kl":
        d = kl(p, q)
    elif kind == "reverse_kl":
        d = kl(q, p)
    elif kind == "jsd":
        m = beta * p + (1 - beta) * q
        d = beta * kl(p, m) + (1 - beta) * kl(q, m)
    elif kind == "skew_kl":
        d = kl(p, skew * p + (1 - skew) * q)
    else:
        d = kl(q, skew * q + (1 - skew) * p)
    return d * tau**2


def naive_kd(s, t, mask=None, weights=None, **kw):
    d = naive_divergence(s, t, **kw)
    m = torch.ones(d.shape, dtype=torch.float64) if mask is None else mask.double()
    w = torch.ones_like(m) if weights is None else weights.double().reshape(m.shape[0], -1).expand(m.shape)
    return (d * m * w).sum() / (m * w).sum()


def rand_logits(*shape, scale=3.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


def value_and_grad(fn, s):
    s = s.detach().clone().requires_grad_(True)
    out = fn(s)
    out.backward()
    return out.detach(), s.grad


B, T, V = 3, 7, 11
KIND_PARAMS = [("forward_kl", {}), ("reverse_kl", {}), ("jsd", {"beta": 0.3}), ("jsd", {"beta": 0.9}),
               ("skew_kl", {"skew": 0.1}), ("skew_kl", {"skew": 0.6}), ("skew_reverse_kl", {"skew": 0.1}),
               ("skew_reverse_kl", {"skew": 0.7})]


# ----------------------------------------------------------------------------- divergences


@pytest.mark.parametrize("kind,params", KIND_PARAMS)
def test_each_divergence_matches_formula_value_and_gradient(kind, params):
    s, t = rand_logits(B, T, V, seed=1), rand_logits(B, T, V, seed=2)
    mask = rand_logits(B, T, seed=3) > -0.5
    weights = torch.tensor([1.0, 2.5, 0.5])
    tau = 2.0
    got, got_grad = value_and_grad(
        lambda x: kd_loss(x, t, mask, temperature=tau, kind=kind, weights=weights, **params), s)
    want, want_grad = value_and_grad(
        lambda x: naive_kd(x, t, mask, weights, kind=kind, tau=tau, **params), s.double())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad.double(), want_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind,params", KIND_PARAMS)
def test_identical_inputs_give_zero_loss_and_gradient(kind, params):
    s = rand_logits(B, T, V, seed=4)
    loss, grad = value_and_grad(lambda x: kd_loss(x, s.clone(), temperature=3.0, kind=kind, **params), s)
    assert abs(loss.item()) < 1e-5
    assert grad.abs().max() < 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_all_masked_is_zero_not_nan_with_zero_gradients(kind):
    s, t = rand_logits(B, T, V, seed=5), rand_logits(B, T, V, seed=6)
    mask = torch.zeros(B, T, dtype=torch.bool)
    loss, grad = value_and_grad(lambda x: kd_loss(x, t, mask, kind=kind, temperature=2.0), s)
    assert loss.item() == 0.0 and not torch.isnan(loss)
    assert torch.equal(grad, torch.zeros_like(grad))
    loss, grad = value_and_grad(lambda x: cross_entropy_loss(x, torch.zeros(B, T, dtype=torch.long), mask), s)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    loss, grad = value_and_grad(
        lambda x: distillation_loss(x, t, torch.zeros(B, T, dtype=torch.long), mask, kd_weight=0.5).loss, s)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    # zero weights count as nothing counted, too
    loss, grad = value_and_grad(lambda x: kd_loss(x, t, weights=torch.zeros(B), kind=kind), s)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("kind,params", KIND_PARAMS[:3])
def test_temperature_squared_scaling(kind, params):
    s, t = rand_logits(B, T, V, seed=7), rand_logits(B, T, V, seed=8)
    tau = 4.0
    scaled = kd_loss(s, t, temperature=tau, kind=kind, **params)
    plain = kd_loss(s / tau, t / tau, temperature=1.0, kind=kind, **params)
    torch.testing.assert_close(scaled, plain * tau**2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind,params", KIND_PARAMS)
@pytest.mark.parametrize("chunk_size", [1, 2, 5, 7, 21])
def test_chunked_equals_unchunked(kind, params, chunk_size):
    s, t = rand_logits(B, T, V, seed=9), rand_logits(B, T, V, seed=10)
    mask = rand_logits(B, T, seed=11) > -1.0  # 17 of 21 rows: chunk sizes 2, 5 do not divide it
    full, full_grad = value_and_grad(lambda x: kd_loss(x, t, mask, kind=kind, chunk_size=10_000, **params), s)
    got, got_grad = value_and_grad(lambda x: kd_loss(x, t, mask, kind=kind, chunk_size=chunk_size, **params), s)
    torch.testing.assert_close(got, full, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_grad, full_grad, rtol=1e-6, atol=1e-7)


def test_default_chunk_size_is_several_chunks_for_a_large_vocab():
    s, t = rand_logits(2, 4, 70_000, seed=12, scale=1.0), rand_logits(2, 4, 70_000, seed=13, scale=1.0)
    got, grad = value_and_grad(lambda x: kd_loss(x, t), s)  # 3 rows per chunk on CPU
    one, one_grad = value_and_grad(lambda x: kd_loss(x, t, chunk_size=8), s)
    torch.testing.assert_close(got, one)
    torch.testing.assert_close(grad, one_grad)


def test_jsd_beta_limits():
    s, t = rand_logits(B, T, V, seed=14), rand_logits(B, T, V, seed=15)
    fkl, rkl = kd_loss(s, t, kind="forward_kl"), kd_loss(s, t, kind="reverse_kl")
    assert torch.equal(kd_loss(s, t, kind="jsd", beta=0.0), fkl)  # defined as the limit of JSD/beta
    assert torch.equal(kd_loss(s, t, kind="jsd", beta=1.0), rkl)  # ... and of JSD/(1 - beta)
    # continuity of the scaled divergence next to the ends (milder logits: faster convergence)
    s1, t1, eps = s / 3, t / 3, 1e-3
    fkl1, rkl1 = kd_loss(s1, t1, kind="forward_kl"), kd_loss(s1, t1, kind="reverse_kl")
    torch.testing.assert_close(kd_loss(s1, t1, kind="jsd", beta=eps) / eps, fkl1, rtol=1e-2, atol=0)
    torch.testing.assert_close(kd_loss(s1, t1, kind="jsd", beta=1 - eps) / eps, rkl1, rtol=1e-2, atol=0)
    for beta in (1e-12, 1 - 1e-7):  # no NaN/inf right next to the ends, value ~ 0
        loss, grad = value_and_grad(lambda x, b=beta: kd_loss(x, t, kind="jsd", beta=b), s)
        assert torch.isfinite(loss) and torch.isfinite(grad).all() and 0 <= loss < 1e-5
    # symmetric JSD (beta = 1/2) is bounded by log 2
    assert kd_loss(s * 10, -t * 10, kind="jsd", beta=0.5) <= math.log(2) + 1e-6


def test_skew_limits():
    s, t = rand_logits(B, T, V, seed=16), rand_logits(B, T, V, seed=17)
    assert torch.equal(kd_loss(s, t, kind="skew_kl", skew=0.0), kd_loss(s, t, kind="forward_kl"))
    assert torch.equal(kd_loss(s, t, kind="skew_reverse_kl", skew=0.0), kd_loss(s, t, kind="reverse_kl"))
    for kind in ("skew_kl", "skew_reverse_kl"):
        loss, grad = value_and_grad(lambda x, k=kind: kd_loss(x, t, kind=k, skew=1.0), s)
        assert loss == 0 and torch.equal(grad, torch.zeros_like(grad))
    with pytest.raises(UserError, match="skew"):
        kd_loss(s, t, kind="skew_kl", skew=1.5)
    with pytest.raises(UserError, match="unknown"):
        kd_loss(s, t, kind="kl")


@pytest.mark.parametrize("kind,params", KIND_PARAMS)
def test_infinite_teacher_logits_do_not_make_nan(kind, params):
    s, t = rand_logits(B, T, V, seed=18), rand_logits(B, T, V, seed=19)
    t[..., :3] = -math.inf  # e.g. a masked padded vocab tail
    got, grad = value_and_grad(lambda x: kd_loss(x, t, kind=kind, **params), s)
    want, want_grad = value_and_grad(lambda x: naive_kd(x, t, kind=kind, **params), s.double())
    assert torch.isfinite(got) and torch.isfinite(grad).all()
    if kind not in ("reverse_kl",) and not (kind == "jsd" and params["beta"] == 1.0):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad.double(), want_grad, rtol=1e-4, atol=1e-7)


def test_bf16_inputs_are_computed_in_fp32_and_give_bf16_gradients():
    s = rand_logits(B, T, V, seed=20, dtype=torch.bfloat16)
    t = rand_logits(B, T, V, seed=21, dtype=torch.bfloat16)
    got, grad = value_and_grad(lambda x: kd_loss(x, t, temperature=2.0), s)
    want, want_grad = value_and_grad(lambda x: naive_kd(x, t, tau=2.0, kind="forward_kl"), s.double())
    assert got.dtype == torch.float32 and grad.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), want_grad, rtol=1e-2, atol=1e-4)  # bf16 storage of the grad


def test_divergence_rows_without_gradient():
    lq = torch.log_softmax(rand_logits(4, V, seed=22), -1)
    lp = torch.log_softmax(rand_logits(4, V, seed=23), -1)
    for kind in KINDS:
        with_grad, g = divergence_rows(lq.clone(), lp, kind)  # lq may become the gradient buffer
        without, none = divergence_rows(lq.clone(), lp, kind, need_grad=False)
        assert none is None and g.shape == lq.shape
        torch.testing.assert_close(with_grad, without)


# ----------------------------------------------------------------------------- autograd contract


def test_noncontiguous_logits_and_upstream_gradient_scale():
    logits = rand_logits(B, T + 1, V, seed=24).requires_grad_(True)
    t = rand_logits(B, T, V, seed=25)
    loss = 3.0 * kd_loss(logits[:, :-1], t, temperature=2.0)  # the usual shift, a strided view
    loss.backward()
    ref = rand_logits(B, T + 1, V, seed=24).double().requires_grad_(True)
    (3.0 * naive_kd(ref[:, :-1], t, kind="forward_kl", tau=2.0)).backward()
    torch.testing.assert_close(logits.grad.double(), ref.grad, rtol=1e-4, atol=1e-7)
    assert torch.equal(logits.grad[:, -1], torch.zeros_like(logits.grad[:, -1]))


def test_second_backward_raises_a_clear_error():
    s = rand_logits(B, T, V, seed=26).requires_grad_(True)
    loss = kd_loss(s, rand_logits(B, T, V, seed=27))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already backpropagated"):
        loss.backward()


def test_teacher_gets_no_gradient_and_eval_needs_no_grad_buffer():
    s = rand_logits(B, T, V, seed=28)
    t = rand_logits(B, T, V, seed=29).requires_grad_(True)
    with torch.no_grad():
        loss = kd_loss(s, t)
    assert not loss.requires_grad
    torch.testing.assert_close(loss.double(), naive_kd(s, t.detach(), kind="forward_kl"), rtol=1e-5, atol=1e-6)
    with torch.inference_mode():  # a student that requires grad, evaluated without autograd
        loss = kd_loss(s.clone().requires_grad_(True), t)
    assert not loss.requires_grad


def test_shape_mismatch_names_the_shapes():
    with pytest.raises(ValueError, match="differ"):
        kd_loss(rand_logits(B, T, V), rand_logits(B, T, V + 1))
    with pytest.raises(ValueError, match="mask"):
        kd_loss(rand_logits(B, T, V), rand_logits(B, T, V), torch.ones(B, T + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="weights"):
        kd_loss(rand_logits(B, T, V), rand_logits(B, T, V), weights=torch.ones(B + 1))


# ----------------------------------------------------------------------------- CE and the mix


def test_cross_entropy_matches_torch_with_ignore_index_and_mask():
    s = rand_logits(B, T, V, seed=30)
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
    labels[0, :3] = -100
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[2, 5:] = False
    got, grad = value_and_grad(lambda x: cross_entropy_loss(x, labels, mask, chunk_size=4), s)
    ref_labels = labels.masked_fill(~mask, -100)
    want, want_grad = value_and_grad(lambda x: F.cross_entropy(x.reshape(-1, V), ref_labels.reshape(-1)), s)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grad, want_grad)
    with pytest.raises(ValueError, match="labels must be in"):
        cross_entropy_loss(s, labels.clamp_min(0) + V)


def test_distillation_loss_mixes_with_kd_weight_on_the_distillation_term():
    s, t = rand_logits(B, T, V, seed=31), rand_logits(B, T, V, seed=32)
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    out = distillation_loss(s, t, labels, kd_weight=0.7, temperature=2.0)
    ce, kd = cross_entropy_loss(s, labels), kd_loss(s, t, temperature=2.0)
    torch.testing.assert_close(out.loss, 0.3 * ce + 0.7 * kd)
    torch.testing.assert_close(out.ce, ce)
    torch.testing.assert_close(out.kd, kd)
    assert torch.equal(distillation_loss(s, None, labels, kd_weight=0.0).loss, ce)
    only_kd = distillation_loss(s, t, None, kd_weight=1.0, temperature=2.0)
    assert torch.equal(only_kd.loss, kd) and only_kd.ce is None
    with pytest.raises(UserError, match="kd_weight"):
        distillation_loss(s, t, labels, kd_weight=1.5)


# ----------------------------------------------------------------------------- sample weights


def test_per_sample_weights_equal_per_token_broadcast_and_weighted_mean():
    s, t = rand_logits(B, T, V, seed=33), rand_logits(B, T, V, seed=34)
    mask = rand_logits(B, T, seed=35) > 0
    w = torch.tensor([0.5, 2.0, 1.0])
    per_sample = kd_loss(s, t, mask, weights=w)
    per_token = kd_loss(s, t, mask, weights=w[:, None].expand(B, T))
    torch.testing.assert_close(per_sample, per_token)
    d = naive_divergence(s, t, "forward_kl")
    want = (d * mask * w[:, None]).sum() / (mask * w[:, None]).sum()
    torch.testing.assert_close(per_sample.double(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=">= 0"):
        kd_loss(s, t, weights=torch.tensor([1.0, -1.0, 1.0]))


def test_specialty_weights_table_inverse_frequency_and_errors():
    tags = ["cardiology", "oncology", "cardiology", "dermatology"]
    w = specialty_weights(tags, {"cardiology": 1.0, "oncology": 2.0, "dermatology": 3.0})
    assert w.tolist() == [1.0, 2.0, 1.0, 3.0] and w.dtype == torch.float32
    # batch counts: total 4, K = 3 -> w = 4 / (3 * count)
    torch.testing.assert_close(specialty_weights(tags, "inverse_frequency"),
                               torch.tensor([4 / 6, 4 / 3, 4 / 6, 4 / 3]))
    counts = {"cardiology": 900, "oncology": 90, "dermatology": 10}
    w = specialty_weights(tags, "inverse_frequency", counts)
    assert w[3] > w[1] > w[0]
    assert sum(counts[s] * (1000 / (3 * counts[s])) for s in counts) / 1000 == pytest.approx(1.0)
    with pytest.raises(UserError, match="'neurology' has no weight"):
        specialty_weights(["neurology"], {"cardiology": 1.0})
    assert specialty_weights(["neurology"], {"cardiology": 1.0}, default=0.5).tolist() == [0.5]
    with pytest.raises(UserError, match="mapping or 'inverse_frequency'"):
        specialty_weights(tags, "inverse")


# ----------------------------------------------------------------------------- several teachers


@pytest.mark.parametrize("confidence", [None, "entropy"])
def test_one_teacher_equals_single_teacher_path_exactly(confidence):
    s, t = rand_logits(B, T, V, seed=36), rand_logits(B, T, V, seed=37)
    mask = rand_logits(B, T, seed=38) > 0
    w = torch.tensor([1.0, 3.0, 0.5])
    single, single_grad = value_and_grad(lambda x: kd_loss(x, t, mask, temperature=2.0, weights=w), s)
    multi, multi_grad = value_and_grad(
        lambda x: multi_teacher_kd(x, [t], mask, teacher_weights=[0.6], confidence=confidence,
                                   temperature=2.0, weights=w).loss, s)
    assert torch.equal(multi, single)
    assert torch.equal(multi_grad, single_grad)


def test_static_teacher_weights_are_normalized():
    s, t1, t2 = (rand_logits(B, T, V, seed=k) for k in (39, 40, 41))
    out = multi_teacher_kd(s, [t1, t2], teacher_weights=[3.0, 2.0], temperature=2.0)
    want = 0.6 * kd_loss(s, t1, temperature=2.0) + 0.4 * kd_loss(s, t2, temperature=2.0)
    torch.testing.assert_close(out.loss, want)
    torch.testing.assert_close(sum(out.per_teacher), out.loss)
    assert normalize_teacher_weights(None, 4) == [0.25] * 4
    with pytest.raises(UserError, match="teacher weights"):
        normalize_teacher_weights([1.0, -1.0], 2)
    with pytest.raises(UserError, match="2 teacher weights given for 3"):
        normalize_teacher_weights([1.0, 1.0], 3)


def test_entropy_confidence_matches_a_direct_per_token_formula():
    s, t1, t2 = (rand_logits(B, T, V, seed=k) for k in (42, 43, 44))
    t2 = t2 * 0.2  # flatter teacher: higher entropy, less weight
    mask = rand_logits(B, T, seed=45) > -0.5
    ws, ct, tau = [0.6, 0.4], 0.5, 2.0
    got, got_grad = value_and_grad(
        lambda x: multi_teacher_kd(x, [t1, t2], mask, teacher_weights=ws, confidence="entropy",
                                   confidence_temperature=ct, temperature=tau).loss, s)

    def ref(x):
        h = [-(F.softmax(t.double(), -1) * F.log_softmax(t.double(), -1)).sum(-1) for t in (t1, t2)]
        score = torch.stack([math.log(w) - hk / ct for w, hk in zip(ws, h)])
        c = torch.softmax(score, 0)
        d = torch.stack([naive_divergence(x, t, "forward_kl", tau=tau) for t in (t1, t2)])
        return ((c * d).sum(0) * mask).sum() / mask.sum()

    want, want_grad = value_and_grad(ref, s.double())
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad.double(), want_grad, rtol=1e-4, atol=1e-7)


def test_confidence_weights_prefer_low_entropy_and_respect_availability():
    h_sharp, h_flat = torch.full((1, 3), 0.1), torch.full((1, 3), 2.0)
    c = confidence_weights([h_sharp, h_flat])
    assert (c[0] > c[1]).all()
    torch.testing.assert_close(c.sum(0), torch.ones(1, 3))
    avail = [torch.tensor([[True, False, False]]), torch.tensor([[True, True, False]])]
    c = confidence_weights([h_sharp, h_flat], [0.6, 0.4], available=avail)
    assert c[:, 0, 1].tolist() == [0.0, 1.0] and c[:, 0, 2].tolist() == [0.0, 0.0]
    assert torch.equal(confidence_weights([h_flat]), torch.ones(1, 1, 3))


def test_token_entropy_matches_formula():
    t = rand_logits(B, T, V, seed=46)
    mask = rand_logits(B, T, seed=47) > 0
    h = token_entropy(t, mask, temperature=2.0, chunk_size=4)
    p = F.softmax(t.double() / 2.0, -1)
    want = -(p * p.log()).sum(-1) * mask
    torch.testing.assert_close(h.double(), want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3), t=st.integers(1, 5), v=st.integers(2, 9), kind=st.sampled_from(KINDS),
    chunk=st.integers(1, 6), tau=st.floats(0.5, 4.0), seed=st.integers(0, 1000),
)
def test_property_nonnegative_and_chunk_invariant(b, t, v, kind, chunk, tau, seed):
    s, te = rand_logits(b, t, v, seed=seed), rand_logits(b, t, v, seed=seed + 1)
    mask = rand_logits(b, t, seed=seed + 2) > -0.3
    a = kd_loss(s, te, mask, kind=kind, temperature=tau, chunk_size=chunk)
    full = kd_loss(s, te, mask, kind=kind, temperature=tau, chunk_size=10_000)
    assert a >= -1e-5
    torch.testing.assert_close(a, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.double(), naive_kd(s, te, mask, kind=kind, tau=tau) if mask.any()
                               else torch.tensor(0.0, dtype=torch.float64), rtol=1e-4, atol=1e-5)
