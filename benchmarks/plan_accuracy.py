"""How close is the memory planner (``distillm-edge train --plan``) to measured peaks? CPU runs.

    python benchmarks/plan_accuracy.py                      # all cases, ~5-10 min on 2 cores
    python benchmarks/plan_accuracy.py --case tiny-cpu      # one case

Each case trains a few steps through the real trainer (``trainer.run``) in a fresh process, with
a thread sampling the process's anonymous resident memory (``RssAnon`` in /proc/self/status, every
5 ms; file-backed pages such as memory-mapped safetensors are left out) and its peak RSS
(``VmHWM``, file pages included: transformers maps fp32 safetensors into memory instead of
copying them, so the teachers' weights show up there, not in the anonymous memory). Both are taken relative to the process just before ``run``
(libraries imported, data prepared), and printed next to the planner's CPU estimate for the same
config, with the error ``(estimate - measured) / measured``.

Cases:
- ``tiny-cpu``: the default recipe (two embedded teachers, fp32), 3 steps of grad-accum 2;
- ``llama1b-4l-amp``: a random model with Llama-3.2-1B's dimensions (2048 wide, 8192 MLP, 32/8
  heads, 128,256 vocabulary) cut to 4 layers (a 16-layer fp32-master run needs ~20 GB here),
  fp32 weights (the master copy) under bf16 autocast, 128 tokens (every position counted), no teacher, 2 steps;
- ``llama1b-16l-lora``: all 16 layers of that shape, bf16, LoRA r=16 on every projection, 128
  tokens, 2 steps (weights + activations + logits at full depth, tiny optimizer state).

The planner's numbers come from configs only; the measured run needs the embedded SmolLM2 model
(its tokenizer is reused for the random models).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CASES = ("tiny-cpu", "llama1b-4l-amp", "llama1b-16l-lora")
LLAMA_1B = Path(__file__).resolve().parents[1] / "distillm_edge/training/architectures/meta-llama--Llama-3.2-1B.json"


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def random_llama(where: Path, layers: int) -> Path:
    """A random bf16 model with Llama-3.2-1B's shape and ``layers`` layers, SmolLM2's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from distillm_edge.models import load_tokenizer
    from distillm_edge.training.plan import config_from_dict

    out = where / f"llama1b-{layers}l"
    if (out / "config.json").is_file():
        return out
    data = json.loads(LLAMA_1B.read_text())
    data["num_hidden_layers"] = layers
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config_from_dict(data), dtype=torch.bfloat16)
    model.save_pretrained(out)
    load_tokenizer("smollm2-135m-instruct", progress=False).save_pretrained(out)
    return out


def case_config(name: str, work: Path):
    from distillm_edge.training.config import resolve_config

    common = {"out": str(work / f"run-{name}"), "eval_examples": 0, "save_every": 0, "progress": False,
              "tensorboard": False, "log_every": 1, "warmup_steps": 0}
    if name == "tiny-cpu":
        return resolve_config("tiny-cpu", overrides=common | {"max_steps": 3, "grad_accum": 2})
    layers = 4 if name == "llama1b-4l-amp" else 16
    # full fine-tuning: fp32 weights (the master copy) under bf16 autocast; LoRA: a frozen bf16 base
    student = {"model": str(random_llama(work, layers)), "layers": None,
               "dtype": "bfloat16" if name == "llama1b-16l-lora" else "float32"}
    # 128 tokens with every position counted: the built-in records are longer, so each sequence is
    # exactly max_length and the run meets the planner's worst case
    extra = {"teachers": [], "kd_weight": 0.0, "student": student, "precision": "bf16", "max_length": 128,
             "train_on_prompt": True,
             "max_steps": 2, "grad_accum": 1, "lr": 1e-4}
    if name == "llama1b-16l-lora":
        extra["lora"] = {"r": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                     "down_proj"]}
    return resolve_config("tiny-cpu", overrides=common | extra)


def child(name: str, work: Path) -> dict:
    """Run one case in this process; return estimate and measurements (bytes)."""
    import torch

    from distillm_edge.training import plan, trainer

    torch.set_num_threads(2)
    cfg = case_config(name, work)
    setup = plan.baseline_setup(cfg, 0, plan.local_devices()[1])
    estimated = plan.estimate(cfg, plan.model_counts(cfg), setup)
    # warm the data cache and imports so the baseline holds them
    trainer.prepared_data(cfg, __import__("distillm_edge.models", fromlist=["load_tokenizer"]).load_tokenizer(
        cfg.student.model, progress=False))
    base_anon, base_rss = status_kib("RssAnon"), status_kib("VmRSS")
    peak = [base_anon]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], status_kib("RssAnon"))
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    trainer.run(cfg)
    stop.set()
    thread.join()
    return {"case": name, "estimate": estimated.devices[0].total,
            "lines": [(label, b) for label, b in estimated.devices[0].lines],
            "anon": (peak[0] - base_anon) * 1024, "rss": (status_kib("VmHWM") - base_rss) * 1024,
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=CASES, action="append", help="run only these cases (repeatable)")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--lines", action="store_true", help="print the planner's lines for each case")
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, Path(args.work))))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="plan-accuracy-") as tmp:
        for name in args.case or CASES:
            env = dict(os.environ, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1")
            proc = subprocess.run([sys.executable, __file__, "--child", name, "--work", tmp], env=env,
                                  capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{name}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            results.append(json.loads(lines[-1][len("RESULT "):]))
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print(f"{'case':<20} {'estimate':>10} {'peak anon':>10} {'error':>8} {'peak RSS':>10} {'error':>8} {'run s':>7}")
    for r in results:
        e, a, s = r["estimate"] / 2**30, r["anon"] / 2**30, r["rss"] / 2**30
        print(f"{r['case']:<20} {e:>8.2f}Gi {a:>8.2f}Gi {(e - a) / a:>+8.1%} {s:>8.2f}Gi {(e - s) / s:>+8.1%} "
              f"{r['seconds']:>7.0f}")
        if args.lines:
            for label, b in r["lines"]:
                print(f"    {label:<72} {b / 2**30:>6.2f} GiB")


if __name__ == "__main__":
    main()
