"""Throughput of one training step, with model-FLOPs utilization against matmul peaks measured at start-up.

Sections (``--sections``, default all), each timed side by side, interleaved over repeats so CPU
contention hits every variant alike; medians; student tokens/s (prompt + response tokens through
the student, padding not counted) and MFU (``training/mfu.py``: model FLOPs of the student's
training step and the teachers' forward passes, over the measured peak of the dtype the step
runs in):

- ``default``: the ``tiny-cpu`` step through the real trainer (``step.step_batches`` + ``step.accumulate`` + AdamW)
  on ``--default-examples`` examples of its plan, as the issue measured it (fp32, batch 1, one optimizer step) and
  the bf16 steps that led to today's default: weights cast once (``precision.AutocastWeights``), packed into rows
  of ``--max-tokens-per-batch`` with transformers' masked rows (``grad_accum`` rows per optimizer step), attention
  per packed example (``training/packed_attention.py``), and the step's micro-batches in threads at once
  (``micro_batch_threads`` auto: the default);
- ``trainer``: the ``tiny-cpu`` run built by ``trainer.setup`` (SmolLM2 + Gemma-3 teachers, the
  15-layer student); a full step (``step.compute_loss``, backward, AdamW) of: supervised (CE only),
  + smollm2, + smollm2 + gemma (shared-vocabulary KL, the default), + ULD 0.5;
- ``precision``: the default two-teacher step in fp32 vs under ``torch.autocast("cpu", bfloat16)``
  (fp32 master weights; teachers' forward passes under the same autocast);
- ``packing``: a student step (CE) on micro-batches of ``--pack-size`` examples right-padded
  (``batches.collate``) vs packed into one row (``packing.collate_packed``);
- ``cache``: builds top-k logit caches of both teachers for the timed records
  (``teachers/cache.py``; bytes/row and build time reported), then the two-teacher step online
  (teachers run) vs cached (``CachedTeacher.rows_for`` + ``cached_kd_loss``), and the KD losses
  of both paths at tau 1 and 8 (the cache's approximation gap on the real teachers);
- ``epoch``: the trainer end to end (``trainer.setup`` of the ``tiny-cpu`` recipe, ``step.accumulate`` + clip +
  AdamW, ``--epoch-steps`` optimizer steps of its real plan) with both teachers online vs both read from caches
  (``teachers[i].cache``, built first over exactly the records those steps use, as ``train --ablation`` does);
  the two runs side by side, interleaved, medians; cache bytes per row and per teacher token, build time, and
  after how many epochs the build has paid for itself.

Run: ``python benchmarks/train_step.py [--sections default,precision,packing,cache,epoch] [--repeats 3] [--batches 2]
[--batch-size 2] [--pack-size 4] [--top-k 64] [--epoch-steps 2] [--threads 0]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see cli/train.py: spinning OpenMP threads stall on shared CPUs


PEAK = {}  # dtype name -> (a, b, matmuls per timing), set in main


def timed(variants: dict, repeats: int, peaks: dict | None = None) -> dict[str, float]:
    """Median seconds of each variant (a callable), interleaved; one warm-up round.

    With ``peaks`` (a dict), the matmul peak of each dtype is timed in the same rounds and written
    there (FLOP/s): MFU against a peak measured under the same CPU contention as the step.
    """
    import torch

    variants = dict(variants)
    if peaks is not None:
        for name, (a, b, n) in PEAK.items():
            variants[f"_peak_{name}"] = lambda a=a, b=b, n=n: [torch.mm(a, b) for _ in range(n)]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(repeats + 1):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            if rep:
                times[name].append(time.perf_counter() - start)
    out = {name: statistics.median(ts) for name, ts in times.items()}
    if peaks is not None:
        for name, (a, _, n) in PEAK.items():
            peaks[name] = n * 2.0 * a.shape[0] ** 3 / out.pop(f"_peak_{name}")
    return out


def table(title: str, rows: list[tuple[str, float, float, float, float]], base: str) -> None:
    """rows: (name, tokens, seconds, flops, peak FLOP/s)."""
    print(f"\n## {title}")
    print(f"(peaks timed alongside: {', '.join(sorted({f'{p / 1e9:.0f}' for *_, p in rows}))} GFLOP/s)")
    print(f"{'variant':<44} {'tokens/s':>9} {'ratio':>7} {'MFU':>7} {'median s':>9}")
    ref = next(tok / s for name, tok, s, _, _ in rows if name == base)
    for name, tok, s, flops, peak in rows:
        print(f"{name:<44} {tok / s:>9.1f} {tok / s / ref:>6.2f}x {100 * flops / s / peak:>6.2f}% {s:>9.2f}")


class Bench:
    """The default models (no trainer): tokenizer, teachers, student, the prepared built-in corpus."""

    def __init__(self, args) -> None:
        import torch

        from distillm_edge.models import LoadOptions, build_student, load_model, select_layers
        from distillm_edge.teachers.cache import resolve_data
        from distillm_edge.training.batches import ensure_chat_template
        from distillm_edge.training.config import TrainConfig
        from distillm_edge.training.cross_tokenizer import shared_vocab
        from distillm_edge.training.mfu import ModelShape
        from distillm_edge.training.teachers import Teacher, pad_id

        self.cfg = TrainConfig()
        smol_spec, gemma_spec = (t.model for t in self.cfg.teachers)
        smol, self.tok = load_model(smol_spec, LoadOptions(), progress=False)
        gemma, gtok = load_model(gemma_spec, LoadOptions(), progress=False)
        for t in (self.tok, gtok):
            ensure_chat_template(t)
        self.student = build_student(smol, select_layers(smol.config.num_hidden_layers, self.cfg.student.layers))
        self.student.config.use_cache = False
        self.student.get_input_embeddings().requires_grad_(False)  # freeze_embeddings (the recipe default)
        self.student.get_output_embeddings().requires_grad_(False)
        self.optimizer = torch.optim.AdamW([p for p in self.student.parameters() if p.requires_grad], lr=1e-5)
        vmap = shared_vocab(self.tok, gtok)
        self.smol = Teacher(0, "smollm2", smol_spec, 0.6, self.tok, pad_id(self.tok), True, model=smol.eval())
        self.gemma = Teacher(1, "gemma", gemma_spec, 0.4, gtok, pad_id(gtok), False, vocab_map=vmap, model=gemma.eval())
        self.gemma.shared_head = gemma.get_output_embeddings().weight.detach()[vmap[1]]
        self.shapes = {k: ModelShape.from_config(m.config) for k, m in (("student", self.student), ("smol", smol),
                                                                          ("gemma", gemma))}
        self.data = resolve_data("builtin")
        from distillm_edge.data import load_prepared

        self.records = list(load_prepared(self.data)["train"])
        self.pad = pad_id(self.tok)

    def examples(self, n: int, with_gemma: bool = True):
        from distillm_edge.training.batches import encode_records

        cross = {1: self.gemma.tokenizer} if with_gemma else {}
        ex, _ = encode_records(self.records[: n + 8], self.tok, cross, self.cfg.max_length)
        return ex[:n]

    def flops(self, examples, teachers: bool = True) -> float:
        """Model FLOPs of the student's step on ``examples`` plus the teachers' forward passes."""
        from distillm_edge.training.batches import collate
        from distillm_edge.training.mfu import sequence_flops

        total = 0.0
        for e in examples:
            b = collate([e], self.pad, {1: self.gemma.pad_id} if e.teachers else {})
            n, rows = len(e.student.ids), b.tokens
            total += sequence_flops(self.shapes["student"], n, head_rows=rows)
            if teachers:
                total += sequence_flops(self.shapes["smol"], n, head_rows=rows, train=False)
                if e.teachers:
                    v = b.views[1]
                    shared = len(self.gemma.vocab_map[1]) / self.shapes["gemma"].vocab
                    total += sequence_flops(self.shapes["gemma"], v.input_ids.shape[1], train=False,
                                            head_rows=int(v.student_rows.numel() * shared))
        return total

    def step(self, batch, *, teachers: bool = True, autocast: bool = False, cached=None, tau: float = 2.0) -> dict:
        """One optimizer step of the default recipe's loss: 0.5 CE + 0.5 (0.6 KD_smol + 0.4 KD_gemma)."""
        import torch

        from distillm_edge.teachers.cache import cached_kd_loss
        from distillm_edge.training.cross_tokenizer import cross_tokenizer_kd
        from distillm_edge.training.losses import cross_entropy_loss, kd_loss
        from distillm_edge.training.teachers import teacher_forward

        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with ctx:
            out = self.student(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=batch.loss_mask)
            logits = out.logits.reshape(1, -1, out.logits.shape[-1])
            parts = {"ce": cross_entropy_loss(logits, batch.targets.view(1, -1))}
            if teachers and cached is None:
                smol = teacher_forward(self.smol, batch, student_vocab=logits.shape[-1]).logits
                view = batch.views[1]
                gemma = teacher_forward(self.gemma, batch, student_vocab=logits.shape[-1], shared_only=True).logits
                parts["kd/smollm2"] = kd_loss(logits, smol, temperature=tau)
                s_ids = self.gemma.vocab_map[0]
                parts["kd/gemma"] = cross_tokenizer_kd(logits, gemma, view.student_rows.view(1, -1), view.teacher_rows.view(1, -1),
                                                       vocab_map=(s_ids, torch.arange(len(s_ids))), uld_weight=0.0,
                                                       temperature=tau)
            elif teachers:
                examples, caches = cached
                parts["kd/smollm2"] = cached_kd_loss(logits, caches[0].rows_for(examples), temperature=tau)
                parts["kd/gemma"] = cached_kd_loss(logits, caches[1].rows_for(examples), temperature=tau,
                                                   vocab_map=caches[1].vocab_map)
            loss = parts["ce"] if not teachers else 0.5 * parts["ce"] + 0.5 * (0.6 * parts["kd/smollm2"] + 0.4 * parts["kd/gemma"])
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {k: float(v.detach()) for k, v in parts.items()}


def section_trainer(args, peaks) -> None:
    import dataclasses

    from distillm_edge.training import step as train_step
    from distillm_edge.training import trainer
    from distillm_edge.training.batches import collate
    from distillm_edge.training.config import resolve_config
    from distillm_edge.training.teachers import pad_id

    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve_config("tiny-cpu", overrides={
            "out": f"{tmp}/run", "eval_examples": 0, "progress": False, "tensorboard": False, "batch_size": args.batch_size,
            "threads": args.threads, "max_steps": 1, "grad_accum": 1})
        r = trainer.setup(cfg)
        r.log.close()
    smol, gemma = r.teachers
    batches = [collate([r.train_examples[i] for i in r.plan[k]], pad_id(r.tokenizer), {gemma.index: gemma.pad_id})
               for k in range(args.batches)]
    tokens = sum(int(b.attention_mask.sum()) for b in batches)
    variants = {
        "supervised (student only, CE)": (dataclasses.replace(cfg, kd_weight=0.0), []),
        "+ smollm2 (same tokenizer)": (cfg, [dataclasses.replace(smol, weight=1.0)]),
        "+ smollm2 + gemma (shared-vocab KL)": (cfg, [smol, gemma]),
        "+ smollm2 + gemma (shared KL + ULD 0.5)": (
            dataclasses.replace(cfg, cross_tokenizer=dataclasses.replace(cfg.cross_tokenizer, uld_weight=0.5)), [smol, gemma]),
    }
    r.student.train()

    def run(vcfg, teachers):
        def go():
            r.cfg, r.teachers = vcfg, teachers
            for b in batches:
                train_step.compute_loss(r, b, tau=2.0)["loss"].backward()
                r.optimizer.step()
                r.optimizer.zero_grad(set_to_none=True)
        return go

    secs = timed({name: run(*v) for name, v in variants.items()}, args.repeats)
    print(f"\n(trainer section: {args.batches} micro-batches of {args.batch_size}, {tokens} student tokens; "
          "MFU not computed here: see the precision section)")
    base = tokens / secs["supervised (student only, CE)"]
    for name, s in secs.items():
        print(f"{name:<44} {tokens / s:>9.1f} {tokens / s / base:>6.2f}x {s:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="default,trainer,precision,packing,cache,epoch")
    parser.add_argument("--default-examples", type=int, default=16, help="examples per timed step in the default section")
    parser.add_argument("--max-tokens-per-batch", type=int, default=512, help="pack budget in the default section")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=2, help="micro-batches timed per variant and repeat")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--pack-size", type=int, default=4, help="examples per micro-batch in the packing section")
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--epoch-steps", type=int, default=2, help="optimizer steps per timed run in the epoch section")
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]

    import torch

    from distillm_edge.training.mfu import measure_peak

    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    peaks = {"fp32": measure_peak(torch.float32), "bf16": measure_peak(torch.bfloat16)}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):  # ~1 s of matmuls per timing
        PEAK[name] = (torch.randn(1024, 1024).to(dtype), torch.randn(1024, 1024).to(dtype),
                      max(1, int(peaks[name] / (2.0 * 1024**3))))
    print(f"threads {torch.get_num_threads()}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; start-up matmul peak "
          f"(1024^3, median of 5): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s "
          f"({peaks['bf16'] / peaks['fp32']:.1f}x); each table's MFU uses the peak re-timed inside its own rounds")
    if "default" in sections:
        section_default(args, peaks)
    if {"precision", "packing", "cache"} & set(sections):
        mine(args, sections, peaks)
    if "trainer" in sections:
        section_trainer(args, peaks)
    if "epoch" in sections:
        section_epoch(args)


def section_default(args, peaks) -> None:
    """The default recipe's step through the real trainer: the issue-time fp32 step (batch 1) side by side with the
    bf16 steps that led to today's default (weights cast once, packed rows, attention per packed example, micro-batches
    in threads)."""
    import dataclasses

    import torch

    from distillm_edge.training import packed_attention as attention
    from distillm_edge.training import step as train_step
    from distillm_edge.training import trainer
    from distillm_edge.training.config import resolve_config
    from distillm_edge.training.packing import pack_order
    from distillm_edge.training.teachers import pad_id

    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve_config("tiny-cpu", overrides={
            "out": f"{tmp}/run", "eval_examples": 0, "progress": False, "tensorboard": False, "threads": args.threads,
            "max_steps": 1, "packing": False, "precision": "bf16"})
        r = trainer.setup(cfg)
        r.log.close()
    accum = cfg.grad_accum  # the recipe's micro-batches per optimizer step (packed rows)
    pads = {t.index: t.pad_id for t in r.teachers if not t.same_tokenizer}
    spad = pad_id(r.tokenizer)
    order = [b[0] for b in r.plan[: args.default_examples]]
    lengths = [len(e.student.ids) for e in r.train_examples]
    tokens = sum(lengths[i] for i in order)
    low = (r.student_autocast, [t.autocast_weights for t in r.teachers])
    per_example = attention.packed_attention
    r.student.train()

    def masked(model, position_ids):  # transformers' block-diagonal mask over the whole packed row (before)
        return contextlib.nullcontext()

    def variant(plan, *, packing: bool, autocast: bool, cast_once: bool, per_row: bool = False, threads: int = 1,
                step_rows: int | None = None):
        """``step_rows``: micro-batches per optimizer step (None: the whole plan in one step, as the issue measured)."""
        steps = [plan] if step_rows is None else [plan[i : i + step_rows] for i in range(0, len(plan), step_rows)]

        def go():
            attention.packed_attention = per_example if per_row else masked
            r.student_autocast = low[0] if cast_once else None
            for t, w in zip(r.teachers, low[1], strict=True):
                t.autocast_weights = w if cast_once else None
            out = []
            try:
                for part in steps:
                    r.cfg = dataclasses.replace(cfg, packing=packing, grad_accum=len(part), max_tokens_per_batch=10**6,
                                                micro_batch_threads=threads)
                    r.plan = part
                    batches = train_step.step_batches(r, 0, 1, 0, pads, spad)
                    if autocast:
                        train_step.accumulate(r, batches, 2.0)
                    else:  # fp32: the same losses with autocast off
                        counts = train_step.step_counts(r, batches)
                        for b in batches:
                            train_step.compute_loss(r, b, 2.0, counts)["loss"].backward()
                    r.optimizer.step()
                    r.optimizer.zero_grad(set_to_none=True)
                    out += batches
            finally:
                attention.packed_attention = per_example
            return out
        return go

    singles = [[i] for i in order]
    packs = pack_order(order, lengths, args.max_tokens_per_batch)
    fp32 = "fp32, batch 1 (the issue's default)"
    before = f"bf16, cast once, packed <= {args.max_tokens_per_batch}, masked rows"
    default = "+ micro-batches in threads (default)"
    variants = {
        fp32: variant(singles, packing=False, autocast=False, cast_once=False),
        "bf16, weights cast once, batch 1": variant(singles, packing=False, autocast=True, cast_once=True),
        before: variant(packs, packing=True, autocast=True, cast_once=True, step_rows=accum),
        "+ attention per packed example": variant(packs, packing=True, autocast=True, cast_once=True, per_row=True,
                                                  step_rows=accum),
        default: variant(packs, packing=True, autocast=True, cast_once=True, per_row=True, threads=0, step_rows=accum),
    }
    flops = {name: train_step.step_flops(fn(), *r.flop_shapes) for name, fn in variants.items()}  # also the warm-up
    secs = timed(variants, args.repeats, peaks)
    r.cfg = dataclasses.replace(cfg, micro_batch_threads=0)
    workers = train_step.micro_batch_threads(r, accum)
    table(f"default: the tiny-cpu step through the trainer (SmolLM2 + Gemma-3 teachers, 15-layer student), "
          f"{len(order)} examples ({tokens} tokens; packed: {len(packs)} rows, {accum} per optimizer step)",
          [(name, tokens, secs[name], flops[name], peaks["fp32" if name == fp32 else "bf16"]) for name in variants], fp32)
    print(f"default vs the issue's default: {secs[fp32] / secs[default]:.2f}x tokens/s; vs {before}: "
          f"{secs[before] / secs[default]:.2f}x (medians of {args.repeats}, interleaved)")
    print("(MFU: model FLOPs of the student's step and both teachers' forward passes, each example as if run alone, "
          "against the peak of the row's own dtype timed in the same rounds; threads: micro_batch_threads auto = "
          f"{workers} threads of {max(1, torch.get_num_threads() // workers)} intra-op thread(s))")


def section_epoch(args) -> None:
    """``--epoch-steps`` trainer steps with both teachers online vs both cached (see the module docstring)."""
    import dataclasses

    import torch

    from distillm_edge.teachers.cache import CacheConfig
    from distillm_edge.teachers.cache import run as build_cache
    from distillm_edge.training import trainer
    from distillm_edge.training.ablation import used_records
    from distillm_edge.training.config import resolve_config
    from distillm_edge.training.step import accumulate, step_batches, temperature
    from distillm_edge.training.teachers import pad_id

    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve_config("tiny-cpu", overrides={
            "out": f"{tmp}/online", "eval_examples": 0, "real_eval": None, "progress": False, "tensorboard": False,
            "threads": args.threads, "max_steps": args.epoch_steps, "save_every": 0})
        from distillm_edge.training.precision import mixed_precision

        data, ids, _ = used_records(cfg)
        dtype = "bfloat16" if mixed_precision(cfg) == "bf16" else "float32"  # as the online teachers run (autocast)
        teachers, built = [], []
        for i, tc in enumerate(cfg.teachers):
            start = time.perf_counter()
            m = build_cache(CacheConfig(teacher=tc.model, data=str(data), out=f"{tmp}/cache{i}", top_k=args.top_k,
                                        student=cfg.student.model, split="train", max_length=4 * cfg.max_length,
                                        record_ids=tuple(ids), threads=args.threads, dtype=dtype, progress=False))
            built.append((tc.model, m, time.perf_counter() - start))
            teachers.append(dataclasses.replace(tc, cache=f"{tmp}/cache{i}"))
        cached_cfg = dataclasses.replace(cfg, teachers=tuple(teachers), out=f"{tmp}/cached")
        runs = {"online": trainer.setup(cfg), "cached": trainer.setup(cached_cfg)}
        for r in runs.values():
            r.log.close()
            r.student.train()

        def steps(r):
            def go():
                pads = {t.index: t.pad_id for t in r.teachers if not t.same_tokenizer}
                for k in range(r.total_steps):
                    batches = step_batches(r, k * r.cfg.grad_accum, 1, 0, pads, pad_id(r.tokenizer))
                    accumulate(r, batches, temperature(r.cfg, k, r.total_steps))
                    torch.nn.utils.clip_grad_norm_(r.optimizer.param_groups[0]["params"], r.cfg.max_grad_norm)
                    r.optimizer.step()
                    r.optimizer.zero_grad(set_to_none=True)
            return go

        secs = timed({name: steps(r) for name, r in runs.items()}, args.repeats)
        r = runs["online"]
        used = [r.train_examples[i] for b in r.plan[: r.total_steps * r.cfg.grad_accum] for i in b]
        tokens = sum(len(e.student.ids) for e in used)
    print(f"\n## epoch: {r.total_steps} trainer steps of tiny-cpu ({len(used)} records, {tokens} student tokens, "
          f"precision {r.accelerator.mixed_precision}), both teachers online vs both cached (top-{args.top_k}, built "
          f"from {dtype} weights)")
    total_build = 0.0
    for spec, m, s in built:
        total_build += s
        print(f"cache {spec:<24} {m['records']:>4} records {m['rows']:>7,} rows  {m['bytes_per_row']:>6.0f} B/row "
              f"{m['bytes'] / max(1, m['tokens']):>6.0f} B/teacher token  (x{m['compression']:.2f} zstd)  built in {s:.0f} s")
    print(f"{'variant':<24} {'median s':>9} {'tokens/s':>9} {'speed-up':>9}")
    for name in ("online", "cached"):
        print(f"{name:<24} {secs[name]:>9.1f} {tokens / secs[name]:>9.1f} {secs['online'] / secs[name]:>8.2f}x")
    saved = secs["online"] - secs["cached"]
    if saved > 0:
        print(f"cache build {total_build:.0f} s = {total_build / saved:.2f} epochs' saving: a cached run pays for its "
              "caches from the epoch after that (the research's six epochs re-run the teachers six times online)")


def mine(args, sections, peaks) -> None:
    """The precision, packing and cache sections (the default models, built here)."""
    b = Bench(args)
    from distillm_edge.training.batches import collate
    from distillm_edge.training.packing import collate_packed, padding_share

    n = args.batches * args.batch_size
    examples = b.examples(n)
    groups = [examples[i : i + args.batch_size] for i in range(0, n, args.batch_size)]
    batches = [collate(g, b.pad, {1: b.gemma.pad_id}) for g in groups]
    tokens = sum(len(e.student.ids) for e in examples)
    flops = b.flops(examples)
    b.student.train()
    if "precision" in sections:
        secs = timed({"fp32": lambda: [b.step(x) for x in batches],
                      "bf16 autocast (fp32 master weights)": lambda: [b.step(x, autocast=True) for x in batches]}, args.repeats,
                     peaks)
        table(f"precision: default two-teacher step, {len(batches)} micro-batches of {args.batch_size} ({tokens} tokens)",
              [("fp32", tokens, secs["fp32"], flops, peaks["fp32"]),
               ("bf16 autocast (fp32 master weights)", tokens, secs["bf16 autocast (fp32 master weights)"], flops,
                peaks["bf16"])], "fp32")
        print("(MFU of each row against the peak of its own dtype)")
    if "packing" in sections:
        pex = b.examples(args.batches * args.pack_size, with_gemma=False)
        pgroups = [pex[i : i + args.pack_size] for i in range(0, len(pex), args.pack_size)]
        padded = [collate(g, b.pad, {}) for g in pgroups]
        packed = [collate_packed(g, b.pad, {}) for g in pgroups]
        ptok = sum(len(e.student.ids) for e in pex)
        pflops = b.flops(pex, teachers=False)

        def run_packed():
            for pb in packed:
                from distillm_edge.training.losses import cross_entropy_loss

                out = b.student(**pb.model_inputs(), logits_to_keep=pb.batch.loss_mask)
                cross_entropy_loss(out.logits.reshape(1, -1, out.logits.shape[-1]), pb.batch.targets.view(1, -1)).backward()
                b.optimizer.step()
                b.optimizer.zero_grad(set_to_none=True)

        secs = timed({"padded": lambda: [b.step(x, teachers=False) for x in padded], "packed": run_packed}, args.repeats,
                     peaks)
        share = padding_share([list(range(i, i + len(g))) for i, g in zip(range(0, len(pex), args.pack_size), pgroups)],
                              [len(e.student.ids) for e in pex])
        table(f"packing: student CE step, {len(pgroups)} micro-batches of {args.pack_size} ({ptok} tokens; padded "
              f"batches are {100 * share:.0f}% padding)",
              [("padded (right padding)", ptok, secs["padded"], pflops, peaks["fp32"]),
               ("packed (one row, position ids)", ptok, secs["packed"], pflops, peaks["fp32"])], "padded (right padding)")
    if "cache" in sections:
        section_cache(args, b, examples, batches, tokens, flops, peaks)


def section_cache(args, b, examples, batches, tokens, flops, peaks) -> None:
    from distillm_edge.teachers.cache import CacheConfig, CachedTeacher, run

    n_records = max(b.records.index(next(r for r in b.records if str(r["id"]) == e.id)) for e in examples) + 1
    with tempfile.TemporaryDirectory() as tmp:
        caches, lines = [], []
        for t in (b.smol, b.gemma):
            start = time.perf_counter()
            m = run(CacheConfig(teacher=t.spec, data=str(b.data), out=f"{tmp}/{t.name}", top_k=args.top_k,
                                max_examples=n_records, progress=False))
            lines.append(f"{t.name:<10} {m['rows']:>7,} rows  {m['bytes_per_row']:>6.0f} B/row zstd "
                         f"({m['raw_bytes_per_row']:.0f} raw, x{m['compression']:.2f})  built in {time.perf_counter() - start:.0f} s "
                         f"({(time.perf_counter() - start) / max(1, m['records']):.1f} s/record)")
            caches.append(CachedTeacher.open(f"{tmp}/{t.name}", data_dir=b.data, student_tokenizer=b.tok))
        print(f"\n## cache: top-{args.top_k} over the {n_records} first records of the built-in train split")
        print("\n".join(lines))
        groups = [examples[i : i + args.batch_size] for i in range(0, len(examples), args.batch_size)]
        gaps = []
        for tau in (1.0, 8.0):
            online = [b.step(x, tau=tau) for x in batches]
            cached = [b.step(x, tau=tau, cached=(g, caches)) for x, g in zip(batches, groups)]
            for key in ("kd/smollm2", "kd/gemma"):
                on, ca = sum(o[key] for o in online), sum(c[key] for c in cached)
                gaps.append(f"{key} tau {tau:g}: online {on:.4f}, cached {ca:.4f} ({100 * (ca - on) / on:+.1f}%)")
        print("KD loss, online vs cached (the same batches; steps in between move the student slightly):")
        print("\n".join("  " + g for g in gaps))
        gap_table(b, batches)
        cflops = b.flops(examples, teachers=False)
        secs = timed({"online": lambda: [b.step(x) for x in batches],
                      "cached": lambda: [b.step(x, cached=(g, caches)) for x, g in zip(batches, groups)]}, args.repeats,
                     peaks)
        table(f"cache: default two-teacher step, {len(batches)} micro-batches of {args.batch_size} ({tokens} tokens)",
              [("online (both teachers run)", tokens, secs["online"], flops, peaks["fp32"]),
               ("cached (top-k from the cache)", tokens, secs["cached"], cflops, peaks["fp32"])],
              "online (both teachers run)")


def gap_table(b, batches) -> None:
    """How far the top-k + tail-bucket KD falls below the online KD, by k and temperature (the same logits)."""
    import torch

    from distillm_edge.teachers.cache import TEMPERATURES, CachedRows, cached_kd_loss, summarize_rows
    from distillm_edge.training.cross_tokenizer import cross_tokenizer_kd
    from distillm_edge.training.losses import kd_loss
    from distillm_edge.training.teachers import teacher_forward

    ks, taus = (16, 64, 256, 1024), (1.0, 2.0, 4.0, 8.0)
    gaps = {(name, k, tau): [0.0, 0.0] for name in ("smollm2", "gemma") for k in ks for tau in taus}
    with torch.no_grad():
        for batch in batches:
            out = b.student(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=batch.loss_mask)
            logits = out.logits.reshape(1, -1, out.logits.shape[-1])
            smol = teacher_forward(b.smol, batch, student_vocab=logits.shape[-1]).logits
            view = batch.views[1]
            gemma = teacher_forward(b.gemma, batch, student_vocab=logits.shape[-1]).logits[:, view.teacher_rows]
            for k in ks:
                s = summarize_rows(smol[0], k, TEMPERATURES)
                g = summarize_rows(gemma[0], k, TEMPERATURES, b.gemma.vocab_map[1])
                rs = CachedRows(torch.arange(smol.shape[1]), s["top_ids"].long(), s["top_logp"].float(), s["tail"], TEMPERATURES)
                rg = CachedRows(view.student_rows, g["top_ids"].long(), g["top_logp"].float(), g["shared_tail"], TEMPERATURES)
                for tau in taus:
                    gaps["smollm2", k, tau][0] += float(kd_loss(logits, smol, temperature=tau))
                    gaps["smollm2", k, tau][1] += float(cached_kd_loss(logits, rs, temperature=tau))
                    pos = torch.arange(view.student_rows.numel()).view(1, -1)
                    gaps["gemma", k, tau][0] += float(cross_tokenizer_kd(
                        logits, gemma, view.student_rows.view(1, -1), pos, vocab_map=b.gemma.vocab_map, uld_weight=0.0,
                        temperature=tau))
                    gaps["gemma", k, tau][1] += float(cached_kd_loss(logits, rg, temperature=tau, vocab_map=b.gemma.vocab_map))
    print("cached KD / online KD (top-k + one tail bucket vs the full distribution; same student logits):")
    print(f"{'teacher':<9} {'k':>5} " + " ".join(f"{'tau ' + format(t, 'g'):>8}" for t in taus))
    for name in ("smollm2", "gemma"):
        for k in ks:
            print(f"{name:<9} {k:>5} " + " ".join(f"{gaps[name, k, t][1] / gaps[name, k, t][0]:>8.3f}" for t in taus))


if __name__ == "__main__":
    main()
