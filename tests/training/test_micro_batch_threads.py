"""``micro_batch_threads``: a step's micro-batches run in threads at once and compute what one-after-another does.

A tiny two-teacher run (a same-tokenizer Llama and Gemma-3's tokenizer as the other teacher), packed rows, four
micro-batches: ``step.accumulate`` with 2 threads vs 1 gives the same loss parts (1e-6 relative or absolute) and
gradients (1e-5 of each tensor's largest entry; measured bit-identical),
in fp32 and under bf16 autocast (the pre-cast teacher weights and the packed-attention switch are shared by the
threads). The micro-batches really ran on two threads; afterwards the models are as before (fp32 weights, sdpa);
a failure in a worker thread reaches the caller. Timing is in ``benchmarks/train_step.py``, not here.

Run: ``pytest tests/training/test_micro_batch_threads.py`` (~1 min: three tiny runs set up).
"""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
from tinyrun import tiny_config

from distillm_edge.training import step, trainer
from distillm_edge.training.teachers import pad_id

# (loss parts: relative and absolute; gradients: of each tensor's largest entry). What may differ: the order in which
# four micro-batches' gradients add, and torch's reductions (a loss's sum over rows) split over 1 thread instead of 2
# (measured: gradients bit-identical in fp32 and bf16; the ~0.002 KD part of this near-copy teacher moves by ~2e-8).
TOLERANCE = {"fp32": (1e-6, 1e-5), "bf16": (1e-6, 1e-5)}


def setup(tiny_llama_dir, tiny_gemma_dir, tiny_data, out, precision: str):
    cfg = tiny_config(tiny_llama_dir, tiny_data, out, max_grad_norm=1e9, freeze_embeddings=False, precision=precision,
                      teachers=[{"model": str(tiny_llama_dir), "weight": 0.6}, {"model": str(tiny_gemma_dir), "weight": 0.4}],
                      packing=True, max_tokens_per_batch=256, grad_accum=4, threads=2)
    r = trainer.setup(cfg)
    r.student.train()
    pads = {t.index: t.pad_id for t in r.teachers if not t.same_tokenizer}
    return r, step.step_batches(r, 0, 1, 0, pads, pad_id(r.tokenizer))


def run(r, batches, threads: int):
    r.cfg = dataclasses.replace(r.cfg, micro_batch_threads=threads)
    r.optimizer.zero_grad(set_to_none=True)
    sums, tokens, seen = step.accumulate(r, batches, 2.0)
    grads = {n: p.grad.clone() for n, p in r.accelerator.unwrap_model(r.student).named_parameters() if p.grad is not None}
    return sums, tokens, seen, grads


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_threaded_micro_batches_equal_one_after_another(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path, precision,
                                                        monkeypatch):
    r, batches = setup(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path / "run", precision)
    try:
        assert len(batches) == 4 and all(b.position_ids is not None for b in batches)
        assert step.micro_batch_threads(dataclasses.replace(r, cfg=dataclasses.replace(r.cfg, micro_batch_threads=0)),
                                        4) == min(2, torch.get_num_threads())
        plain = run(r, batches, 1)
        seen_threads = set()
        original = step.compute_loss

        def traced(*args, **kwargs):
            seen_threads.add(threading.get_ident())
            return original(*args, **kwargs)

        monkeypatch.setattr(step, "compute_loss", traced)
        threaded = run(r, batches, 2)
        assert len(seen_threads) == 2  # the micro-batches did run in two threads
        assert threaded[1:3] == plain[1:3]
        assert threaded[0].keys() == plain[0].keys()
        loss_tol, grad_tol = TOLERANCE[precision]
        for k, v in plain[0].items():
            assert threaded[0][k] == pytest.approx(v, rel=loss_tol, abs=loss_tol), k
        assert threaded[3].keys() == plain[3].keys() and plain[3]
        worst = max(float((threaded[3][n] - g).abs().max() / g.abs().max()) for n, g in plain[3].items())
        print(f"{precision}: largest gradient difference {worst:.2e} of the tensor's largest entry")
        assert worst <= grad_tol
        for t in r.teachers:  # shared state restored: fp32 weights and sdpa attention outside the step
            assert t.model.config._attn_implementation == "sdpa"
            if t.autocast_weights is not None:
                assert all(m.weight is full for m, full, _ in t.autocast_weights.pairs)
        assert r.accelerator.unwrap_model(r.student).config._attn_implementation == "sdpa"
    finally:
        trainer.cleanup(r)


def test_a_failure_in_a_worker_thread_reaches_the_caller(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path, monkeypatch):
    r, batches = setup(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path / "run", "fp32")
    try:
        original = step.compute_loss
        main = threading.get_ident()

        def failing(*args, **kwargs):
            if threading.get_ident() != main:
                raise RuntimeError("boom in a worker")
            return original(*args, **kwargs)

        monkeypatch.setattr(step, "compute_loss", failing)
        with pytest.raises(RuntimeError, match="boom in a worker"):
            run(r, batches, 2)
        assert torch.get_num_threads() == 2  # the caller's thread count is restored
    finally:
        trainer.cleanup(r)


def test_one_at_a_time_off_the_cpu_or_under_ddp(tiny_llama_dir, tiny_data, tmp_path):
    from types import SimpleNamespace

    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "x", micro_batch_threads=0)
    cpu1 = SimpleNamespace(accelerator=SimpleNamespace(num_processes=1, device=torch.device("cpu")), cfg=cfg)
    ddp = SimpleNamespace(accelerator=SimpleNamespace(num_processes=2, device=torch.device("cpu")), cfg=cfg)
    gpu = SimpleNamespace(accelerator=SimpleNamespace(num_processes=1, device=torch.device("cuda")), cfg=cfg)
    assert step.micro_batch_threads(ddp, 4) == 1 and step.micro_batch_threads(gpu, 4) == 1
    assert step.micro_batch_threads(cpu1, 1) == 1
    assert step.micro_batch_threads(SimpleNamespace(accelerator=cpu1.accelerator,
                                                    cfg=dataclasses.replace(cfg, micro_batch_threads=3)), 2) == 2


def test_autocast_weights_swap_once_for_nested_users():
    from distillm_edge.training.precision import AutocastWeights

    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    full = model[0].weight
    low = AutocastWeights(model)
    with low.active():
        with low.active():
            assert model[0].weight.dtype == torch.bfloat16
        assert model[0].weight.dtype == torch.bfloat16  # an inner exit does not restore while another user is inside
    assert model[0].weight is full
