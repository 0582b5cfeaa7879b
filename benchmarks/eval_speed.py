"""Benchmark: MMLU-medical scoring speed of ``distillm-edge eval`` vs lm-evaluation-harness, side by side.

Both score the 8 medical subjects (local CSVs, same split, same few-shot setting) with the same
loaded transformers model and the same torch thread count: ours through ``eval.scoring``
(one pass per question, logits only at the answer position, few-shot prefix computed once), the
harness through our generated YAML tasks (``eval.harness``) with its ``hf`` model. Each repeat
times one full run of each, interleaved; we print per-subject accuracy for both (the agreement
table, with both standard errors: ours is lm-eval's acc_stderr convention), the median seconds and the
speed ratio harness / ours (> 1: we are faster). With
``--gguf`` it also times our scoring on the embedded model's GGUF through llama.cpp.

Run: ``HF_HUB_OFFLINE=1 python benchmarks/eval_speed.py --data-dir ../shared/data --threads 1``
(add ``--num-fewshot 5``, ``--limit N``, ``--repeats 3``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--num-fewshot", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="first N rows per subject (0 = all)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both (0 = torch default)")
    parser.add_argument("--harness-batch-size", type=int, default=8)
    parser.add_argument("--gguf", action="store_true", help="also time our scoring on the model's GGUF")
    args = parser.parse_args()

    import numpy as np
    import torch

    from distillm_edge.backends import open_backend
    from distillm_edge.eval import harness, metrics
    from distillm_edge.eval.config import EvalConfig
    from distillm_edge.eval.run import build_tasks
    from distillm_edge.eval.scoring import score_task
    from distillm_edge.models import local_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = EvalConfig(model=args.model, data_dir=args.data_dir, split=args.split, num_fewshot=args.num_fewshot,
                     limit=args.limit)
    backend = open_backend(args.model, backend="torch", threads=args.threads)
    task_dir = Path(tempfile.mkdtemp(prefix="lmeval-tasks-"))
    names = harness.write_mmlu_tasks(Path(args.data_dir) / "mmlu", task_dir, args.split)
    print(f"model {args.model} ({local_dir(args.model)}), {torch.get_num_threads()} torch threads, "
          f"split {args.split}, {args.num_fewshot}-shot, limit {args.limit or 'none'}, {args.repeats} repeat(s)")

    def ours():
        return {t.name.split("/")[1]: score_task(backend, t) for t in build_tasks(cfg)}

    def reference():
        return harness.run_harness(backend.model, backend.tokenizer, task_dir, names, args.num_fewshot,
                                   args.limit or None, args.harness_batch_size)

    timings: dict[str, list[float]] = {"ours (torch)": [], "lm-eval (hf)": []}
    for r in range(args.repeats):
        for label, fn in (("ours (torch)", ours), ("lm-eval (hf)", reference)):
            started = time.perf_counter()
            result = fn()
            timings[label].append(time.perf_counter() - started)
            print(f"repeat {r + 1}: {label:<14} {timings[label][-1]:8.1f}s")
            if label.startswith("ours"):
                mine = result
            else:
                theirs = result
    gguf_scores = None
    if args.gguf:
        gguf = open_backend(args.model, backend="gguf", threads=args.threads)
        timings["ours (gguf)"] = []
        for r in range(args.repeats):
            started = time.perf_counter()
            gguf_scores = {t.name.split("/")[1]: score_task(gguf, t) for t in build_tasks(cfg)}
            timings["ours (gguf)"].append(time.perf_counter() - started)
            print(f"repeat {r + 1}: {'ours (gguf)':<14} {timings['ours (gguf)'][-1]:8.1f}s")
        gguf.close()

    print(f"\n{'subject':<24}{'n':>4}{'ours':>9}{'lm-eval':>9}{'diff':>7}{'max|Δll|':>10}{'se ours':>9}{'se lm-eval':>11}" +
          (f"{'gguf':>9}" if gguf_scores else ""))
    total_ours = total_ref = total_gguf = total_n = 0
    for subject, scores in mine.items():
        acc = 100.0 * float(np.mean(scores.pred == scores.gold))
        ref = theirs[subject]
        n = len(scores.gold)
        dll = float(np.abs(scores.loglik - np.array(ref["loglik"])).max())
        se = metrics.mean_stderr(100.0 * (scores.pred == scores.gold))
        line = (f"{subject:<24}{n:>4}{acc:>9.2f}{ref['acc']:>9.2f}{acc - ref['acc']:>7.2f}{dll:>10.2e}"
                f"{se:>9.2f}{ref['acc_stderr']:>11.2f}")
        if gguf_scores:
            g = gguf_scores[subject]
            gacc = 100.0 * float(np.mean(g.pred == g.gold))
            total_gguf += gacc * n
            line += f"{gacc:>9.2f}"
        print(line)
        total_ours, total_ref, total_n = total_ours + acc * n, total_ref + ref["acc"] * n, total_n + n
    line = f"{'micro average':<24}{total_n:>4}{total_ours / total_n:>9.2f}{total_ref / total_n:>9.2f}"
    print(line + (f"{'':>37}{total_gguf / total_n:>9.2f}" if gguf_scores else ""))

    med = {k: statistics.median(v) for k, v in timings.items()}
    print("\n" + "  ".join(f"{k}: {v:.1f}s" for k, v in med.items()) + " (medians)")
    print(f"speed ratio lm-eval / ours (torch): {med['lm-eval (hf)'] / med['ours (torch)']:.2f}x"
          + (f"; lm-eval / ours (gguf): {med['lm-eval (hf)'] / med['ours (gguf)']:.2f}x" if gguf_scores else ""))


if __name__ == "__main__":
    main()
