"""One optimizer step's gradient: token-weighted accumulation, specialty weights at batch size 1, L2-SP once per
step, and a setup that keeps no second copy of the student.

Each test builds a run on the tiny random Llama (seconds), replaces its micro-batch plan by chosen examples, and
captures the gradients that reach the optimizer (clipping is off: ``max_grad_norm`` huge).

Run: ``pytest tests/training/test_step.py``.
"""

from __future__ import annotations

import torch
from tinyrun import tiny_config

from distillm_edge.training import step, trainer


def step_grads(cfg, plan: list[list[int]], steps: int = 1) -> dict[str, torch.Tensor]:
    """The student's gradients at the optimizer step number ``steps`` of a run on ``plan``."""
    r = trainer.setup(cfg)
    r.plan, r.total_steps = plan, steps
    grads: dict[str, torch.Tensor] = {}
    original = r.optimizer.step
    calls = {"n": 0}

    def capture(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == steps:
            student = r.accelerator.unwrap_model(r.student)
            grads.update({n: p.grad.detach().clone() for n, p in student.named_parameters() if p.grad is not None})
        return original(*args, **kwargs)

    r.optimizer.step = capture
    try:
        trainer.train(r)
    finally:
        trainer.cleanup(r)
    assert grads, "no optimizer step ran"
    return grads


def lengths(cfg) -> list[int]:
    r = trainer.setup(cfg)
    trainer.cleanup(r)
    return [sum(e.student.counted) for e in r.train_examples]


def assert_same_grads(a: dict, b: dict, rtol=1e-4, atol=1e-7) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def test_grad_accumulation_weights_tokens_like_one_big_batch(tiny_llama_dir, tiny_data, tmp_path):
    """grad_accum 4 x batch 1 == batch 4 x grad_accum 1 on four sequences of unequal length (fp32)."""
    common = dict(max_grad_norm=1e9, save_every=0, kd_weight=0.5)
    counted = lengths(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "probe", **common))
    picks = sorted(range(len(counted)), key=counted.__getitem__)
    chosen = [picks[0], picks[len(picks) // 3], picks[2 * len(picks) // 3], picks[-1]]
    assert len({counted[i] for i in chosen}) == 4, [counted[i] for i in chosen]  # unequal lengths
    big = step_grads(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "big", batch_size=4, grad_accum=1, **common),
                     [chosen])
    accum = step_grads(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "accum", batch_size=1, grad_accum=4, **common),
                       [[i] for i in chosen])
    assert_same_grads(accum, big)


def test_specialty_weight_changes_the_gradient_at_batch_size_one(tiny_llama_dir, tiny_data, tmp_path):
    common = dict(max_grad_norm=1e9, save_every=0, batch_size=1, grad_accum=2)
    r = trainer.setup(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "probe", **common))
    trainer.cleanup(r)
    first = r.train_examples[0]
    other = next(i for i, e in enumerate(r.train_examples) if e.specialty != first.specialty)
    plan = [[0], [other]]
    weights = {first.specialty: 2.0}
    plain = step_grads(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "plain", **common), plan)
    weighted = step_grads(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "w", specialty_weights=weights, **common), plan)
    diff = max(float((plain[n] - weighted[n]).abs().max()) for n in plain)
    assert diff > 1e-4, "a specialty weight of 2 on one of two samples left the gradient unchanged"
    together = step_grads(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "b2", specialty_weights=weights,
                                      **(common | {"batch_size": 2, "grad_accum": 1})), [[0, other]])
    assert_same_grads(weighted, together)


def test_l2_sp_is_one_gradient_term_per_step_not_a_graph_per_micro_batch(tiny_llama_dir, tiny_data, tmp_path):
    from distillm_edge.training.batches import collate
    from distillm_edge.training.teachers import pad_id

    common = dict(max_grad_norm=1e9, save_every=0, batch_size=1, grad_accum=2)
    lam = 0.05

    def saved_bytes(l2_weight: float, out: str) -> tuple[int, int]:
        r = trainer.setup(tiny_config(tiny_llama_dir, tiny_data, tmp_path / out, l2_weight=l2_weight, **common))
        batch = collate([r.train_examples[0]], pad_id(r.tokenizer), {})
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step.compute_loss(r, batch, 1.0)
        weights = sum(p.numel() * p.element_size() for p in r.student.parameters() if p.requires_grad)
        trainer.cleanup(r)
        return total, weights

    (with_l2, weights), (plain, _) = saved_bytes(lam, "mem-l2"), saved_bytes(0.0, "mem-plain")
    assert with_l2 - plain < 0.1 * weights, f"L2-SP kept {with_l2 - plain:,} bytes for backward ({weights:,} of weights)"

    # the same gradient as the penalty's: at step 2, grad(with L2) - grad(without) == 2 * lam * (p - p0)
    plan = [[0], [1], [2], [3]]
    with_l2 = step_grads(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "l2", l2_weight=lam, **common), plan, steps=2)
    without = step_grads(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "no", **common), plan, steps=2)
    r0 = trainer.setup(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "p0", **common))
    p0 = {n: p.detach().clone() for n, p in r0.accelerator.unwrap_model(r0.student).named_parameters()}
    trainer.cleanup(r0)
    r1 = trainer.setup(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "p1", max_steps=1, **common))
    r1.plan, r1.total_steps = plan, 1
    trainer.train(r1)
    p1 = {n: p.detach().clone() for n, p in r1.accelerator.unwrap_model(r1.student).named_parameters()}
    trainer.cleanup(r1)
    for n in with_l2:
        torch.testing.assert_close(with_l2[n] - without[n], 2 * lam * (p1[n] - p0[n]), rtol=1e-3, atol=1e-7)


def test_setup_keeps_no_second_copy_of_the_student(tiny_llama_dir, tiny_data, tmp_path):
    """The "before" column must not come from a deep copy of the student held (on the GPU) through training."""
    r = trainer.setup(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "run", eval_examples=2))
    trained = ("student", "projections", "vocab_projections")
    copies = [n for n, v in vars(r).items() if isinstance(v, torch.nn.Module) and n not in trained]
    trainer.cleanup(r)
    assert not copies, f"the run holds extra model copies: {copies}"
