"""Benchmark: chunked KD loss (``training.losses.kd_loss``) vs the naive full-tensor version.

Both compute tau^2 * KL(softmax(teacher/tau) || softmax(student/tau)), masked mean over tokens,
forward + backward w.r.t. the student logits, at large vocabularies (Llama-3: 128,256; Gemma-3:
262,144). Printed side by side in one run:

- peak memory: each variant runs once in a fresh subprocess; the logits are allocated first, then
  the kernel's peak-RSS counter is reset (``echo 5 > /proc/self/clear_refs``) and the peak RSS
  (VmHWM) after forward+backward minus the RSS before is reported ("extra" = the loss's own
  memory, including the unavoidable [tokens, vocab] gradient). The inputs' size is shown apart.
- time: one subprocess alternates the two variants ``--repeats`` times; medians of wall time and
  of process CPU time are reported (CPU time is the steadier figure on a shared, loaded machine).
- values: loss and gradient of both variants on the same inputs (max abs difference).

Run: ``python benchmarks/kd_loss.py`` (defaults: 512 tokens, fp32, vocab 128256 and 262144;
naive peak stays < 8 GB). ``--dtype bf16`` benchmarks bf16 logits.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from distillm_edge.training.losses import kd_loss

TAU = 2.0


def naive_kd(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The plain full-tensor reference (what one writes without thinking about memory)."""
    lq = F.log_softmax(student.float() / TAU, dim=-1)
    lp = F.log_softmax(teacher.float() / TAU, dim=-1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    m = mask.float()
    return (kl * m).sum() / m.sum() * TAU**2


def chunked_kd(student, teacher, mask, chunk_size=None):
    return kd_loss(student, teacher, mask, temperature=TAU, chunk_size=chunk_size)


def inputs(tokens: int, vocab: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(1, tokens, vocab, generator=g).mul_(3).to(dtype).requires_grad_(True)
    teacher = torch.randn(1, tokens, vocab, generator=g).mul_(3).to(dtype)
    mask = torch.ones(1, tokens, dtype=torch.bool)
    mask[:, : tokens // 8] = False  # a short prompt is not counted
    return student, teacher, mask


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def hwm_mb() -> float:
    with open("/proc/self/status") as fh:
        return int(re.search(r"VmHWM:\s+(\d+)", fh.read()).group(1)) / 1024


def run_variant(name: str, student, teacher, mask, chunk_size):
    student.grad = None
    loss = naive_kd(student, teacher, mask) if name == "naive" else chunked_kd(student, teacher, mask, chunk_size)
    loss.backward()
    return loss.detach()


def worker_memory(args) -> None:
    torch.set_num_threads(args.threads)
    student, teacher, mask = inputs(args.tokens, args.vocab[0], DTYPES[args.dtype])
    before = rss_mb()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    run_variant(args.variant, student, teacher, mask, args.chunk_size)
    print(json.dumps({"extra_mb": hwm_mb() - before, "inputs_mb": before}))


def worker_time(args) -> None:
    torch.set_num_threads(args.threads)
    student, teacher, mask = inputs(args.tokens, args.vocab[0], DTYPES[args.dtype])
    out = {}
    for name in ("naive", "chunked"):  # warm-up, and the values to compare
        out[name] = (run_variant(name, student, teacher, mask, args.chunk_size), student.grad.clone())
    wall = {"naive": [], "chunked": []}
    cpu = {"naive": [], "chunked": []}
    for _ in range(args.repeats):
        for name in ("naive", "chunked"):
            t0, c0 = time.perf_counter(), time.process_time()
            run_variant(name, student, teacher, mask, args.chunk_size)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    (ln, gn), (lc, gc) = out["naive"], out["chunked"]
    print(json.dumps({
        "naive_s": statistics.median(wall["naive"]), "chunked_s": statistics.median(wall["chunked"]),
        "naive_cpu": statistics.median(cpu["naive"]), "chunked_cpu": statistics.median(cpu["chunked"]),
        "loss_naive": ln.item(), "loss_chunked": lc.item(),
        "loss_abs_diff": (ln - lc).abs().item(), "grad_max_abs_diff": (gn.float() - gc.float()).abs().max().item(),
        "grad_max_abs": gn.float().abs().max().item(),
    }))


def subprocess_json(argv: list[str]) -> dict:
    res = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"worker {' '.join(argv)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[128256, 262144])
    ap.add_argument("--tokens", type=int, default=512, help="B*T token rows (batch 1)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the workers")
    ap.add_argument("--chunk-size", type=int, default=None, help="rows per chunk (default: automatic)")
    ap.add_argument("--worker", choices=["memory", "time"], help=argparse.SUPPRESS)
    ap.add_argument("--variant", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "memory":
        return worker_memory(args)
    if args.worker == "time":
        return worker_time(args)

    print(f"KD forward+backward, {args.tokens} tokens (1/8 masked), {args.dtype} logits, tau={TAU}, "
          f"{args.threads} thread(s), median of {args.repeats}; memory = peak RSS above the inputs (VmHWM); "
          "speed = naive time / chunked time (>1: chunked faster)")
    header = (f"{'vocab':>7} {'inputs':>8} {'naive MB':>9} {'chunk MB':>9} {'mem ratio':>9} "
              f"{'naive s':>8} {'chunk s':>8} {'speed':>6} {'naive cpu':>9} {'chunk cpu':>9} {'speed':>6} "
              f"{'|dloss|':>9} {'|dgrad|max':>10}")
    print(header)
    for vocab in args.vocab:
        common = ["--vocab", str(vocab), "--tokens", str(args.tokens), "--dtype", args.dtype,
                  "--threads", str(args.threads), "--repeats", str(args.repeats)]
        if args.chunk_size:
            common += ["--chunk-size", str(args.chunk_size)]
        mem = {v: subprocess_json([*common, "--worker", "memory", "--variant", v]) for v in ("naive", "chunked")}
        tm = subprocess_json([*common, "--worker", "time"])
        grad_mb = args.tokens * vocab * DTYPES[args.dtype].itemsize / 2**20
        print(f"{vocab:>7} {mem['naive']['inputs_mb']:>7.0f}M {mem['naive']['extra_mb']:>9.0f} "
              f"{mem['chunked']['extra_mb']:>9.0f} {mem['chunked']['extra_mb'] / mem['naive']['extra_mb']:>8.3f}x "
              f"{tm['naive_s']:>8.3f} {tm['chunked_s']:>8.3f} {tm['naive_s'] / tm['chunked_s']:>5.2f}x "
              f"{tm['naive_cpu']:>9.3f} {tm['chunked_cpu']:>9.3f} {tm['naive_cpu'] / tm['chunked_cpu']:>5.2f}x "
              f"{tm['loss_abs_diff']:>9.2e} {tm['grad_max_abs_diff']:>10.2e}"
              f"   (loss {tm['loss_chunked']:.5f}; gradient buffer alone {grad_mb:.0f} MB)")


if __name__ == "__main__":
    main()
