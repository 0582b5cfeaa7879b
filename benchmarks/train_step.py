"""Throughput of one training step: plain supervised vs distillation with one and with both teachers.

Builds the ``tiny-cpu`` run once (SmolLM2 teacher, Gemma-3 cross-tokenizer teacher, 15-layer
student) and times, on the same micro-batches and interleaved so CPU contention hits every
variant alike, a full step (forward, loss, backward, AdamW update) of:

1. ``supervised``: the student alone, cross-entropy only (kd_weight 0, no teacher runs);
2. ``+ smollm2``: distillation from the same-tokenizer teacher;
3. ``+ smollm2 + gemma``: both teachers, Gemma through shared-vocabulary KL (the recipe default:
   Gemma projected onto the 46k shared tokens only);
4. ``+ smollm2 + gemma (ULD)``: the same with ``cross_tokenizer.uld_weight=0.5`` (Gemma's full
   262k-wide softmax and a sort per aligned token).

Prints student tokens/s (prompt + response tokens through the student per second), medians over
repeats, and each variant's ratio to the supervised step.

Run: ``python benchmarks/train_step.py [--repeats 5] [--batches 4] [--batch-size 1] [--threads 0]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see cli/train.py: spinning OpenMP threads stall on shared CPUs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=4, help="micro-batches timed per variant and repeat")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()

    import torch

    from distillm_edge.training import trainer
    from distillm_edge.training.batches import collate
    from distillm_edge.training.config import resolve_config
    from distillm_edge.training.teachers import pad_id

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve_config("tiny-cpu", overrides={
            "out": f"{tmp}/run", "eval_examples": 0, "progress": False, "tensorboard": False, "batch_size": args.batch_size,
            "threads": args.threads, "max_steps": 1, "grad_accum": 1})
        r = trainer.setup(cfg)
        r.log.close()
    smol, gemma = r.teachers
    pads = {gemma.index: gemma.pad_id}
    batches = [collate([r.train_examples[i] for i in r.plan[k]], pad_id(r.tokenizer), pads) for k in range(args.batches)]
    tokens = sum(int(b.attention_mask.sum()) for b in batches)
    variants = {
        "supervised (student only, CE)": (dataclasses.replace(cfg, kd_weight=0.0), []),
        "+ smollm2 (same tokenizer)": (cfg, [dataclasses.replace(smol, weight=1.0)]),
        "+ smollm2 + gemma (shared-vocab KL)": (cfg, [smol, gemma]),
        "+ smollm2 + gemma (shared KL + ULD 0.5)": (
            dataclasses.replace(cfg, cross_tokenizer=dataclasses.replace(cfg.cross_tokenizer, uld_weight=0.5)), [smol, gemma]),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    r.student.train()

    def step(batch) -> None:
        parts = trainer.compute_loss(r, batch, tau=2.0)
        parts["loss"].backward()
        r.optimizer.step()
        r.optimizer.zero_grad(set_to_none=True)

    print(f"threads {torch.get_num_threads()}, {args.batches} micro-batches of {args.batch_size} "
          f"({tokens} student tokens) per variant, {args.repeats} repeats (+1 warm-up), interleaved")
    for rep in range(args.repeats + 1):
        for name, (vcfg, teachers) in variants.items():
            r.cfg, r.teachers = vcfg, teachers
            start = time.perf_counter()
            for b in batches:
                step(b)
            if rep:  # the first round warms up allocators and caches
                times[name].append(time.perf_counter() - start)
    base = tokens / statistics.median(times["supervised (student only, CE)"])
    print(f"{'variant':<42} {'tokens/s':>10} {'vs supervised':>14} {'median s':>9}")
    for name, ts in times.items():
        tps = tokens / statistics.median(ts)
        print(f"{name:<42} {tps:>10.1f} {tps / base:>13.2f}x {statistics.median(ts):>9.2f}")


if __name__ == "__main__":
    main()
