"""The CUDA paths of ``train``, checked in one short run on a lent GPU (CI never runs this).

    python benchmarks/gpu_check.py --out DIR [--budget 420]      # on a CUDA machine
    python benchmarks/gpu_check.py --out DIR --tiny               # a CPU rehearsal with tiny shapes

No weights travel to the GPU machine (it has no network, and the embedded models are larger than
what may be sent), so every model here is random with the real architecture's shape, built from the
planner's stored configs (``training/architectures``) with the real tokenizers; the data is the
built-in corpus, prepared on the machine. The losses therefore show the trainer learning the corpus
and the random teachers' distributions, not medical knowledge: this checks that the CUDA paths run,
what they cost, and how the memory planner compares, not what a real teacher teaches.

Cases (each in its own process, so each has its own ``torch.cuda.max_memory_allocated``), in order,
skipped once ``--budget`` seconds are spent:
- ``small-nf4``: the default recipe's shape on CUDA. Teachers: a random Llama-3.2-1B-shaped model
  (SmolLM2's tokenizer) in NF4 and a random Gemma-3 270M (its 262,144-token tokenizer: the
  cross-tokenizer path) in NF4; student: a random SmolLM2-135M, fp32 master weights under bf16
  autocast, hidden-state alignment to the 1B teacher through a projection; 1,024-token packed rows,
  a few hundred steps; then the before/after evaluation on the GPU.
- ``research-1gpu``: the ``med42-llama`` recipe with its models swapped for random ones of the same
  shape: a Llama3-Med42-8B-shaped teacher in NF4 and a Llama-3.2-1B student (fp32 master + bf16
  autocast), 1,024-token rows. Peak memory against the planner's one-GPU estimate.
- ``quant-cost``: ``teachers quantization-cost`` (NF4 and int8 against bf16) on the 1B-shaped teacher.
- ``qlora``: the 1B student as a QLoRA run (NF4 base, LoRA r=16), no teacher.
- ``8bit-ckpt``: ``small-nf4`` with bitsandbytes' 8-bit AdamW and gradient checkpointing.

A case past its ceiling (``CAP_S``) is stopped; its ``metrics.jsonl`` is still copied to ``--out``.
On the device machine, ``.gpu/run.sh`` (not in git: the carried wheels and tokenizers) installs
bitsandbytes, datasets, transformers and peft at our pinned versions next to the image's torch, then
runs this script. Each case prints ``RESULT {json}``: tokens/s (median of the logged steps after the first 5), peak
allocated memory against the planner's estimate (the planner's CUDA reserve line is left out:
``max_memory_allocated`` does not see the CUDA context), and the loss every few steps.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCH = ROOT / "distillm_edge/training/architectures"
CASES = ("small-nf4", "research-1gpu", "quant-cost", "qlora", "8bit-ckpt")  # most telling first
CAP_S = {"small-nf4": 200, "research-1gpu": 170, "quant-cost": 70, "qlora": 70, "8bit-ckpt": 70}  # per-case ceilings
# the planner's adapter cases, one peak each (3 steps): length, dropout, checkpointing, NF4 or bf16 base
VARIANTS = {
    "qlora-512": ("qlora", {"max_length": 512, "max_tokens_per_batch": 512}),
    "qlora-nodrop": ("qlora", {"lora": {"dropout": 0.0}}),
    "qlora-ckpt": ("qlora", {"gradient_checkpointing": True}),
    "lora-bf16": ("qlora", {"student": {"quantization": "none"}}),
    "small-mfu": ("small-nf4", {"eval_examples": 0}),
}
CASES += tuple(VARIANTS)
CAP_S |= {name: 60 for name in VARIANTS} | {"small-mfu": 120}
RESERVE_LABEL = "CUDA context"


def shape(name: str, tiny: bool, **over) -> dict:
    data = json.loads((ARCH / f"{name}.json").read_text()) | over
    if tiny:  # a CPU rehearsal: the same code path on a model of a few MB
        data |= {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "head_dim": 16}
    return data


def make_model(dst: Path, data: dict, tokenizer_dir: Path, device: str) -> Path:
    """A random bf16 model of ``data``'s shape, saved with ``tokenizer_dir``'s tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from distillm_edge.training.plan import config_from_dict

    if (dst / "config.json").is_file():
        return dst
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config_from_dict(data), dtype=torch.bfloat16)
    model.save_pretrained(dst)
    del model
    for f in tokenizer_dir.iterdir():
        if f.is_file() and f.name not in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy(f, dst / f.name)
    return dst


def models(work: Path, tok: Path, tiny: bool, device: str, which: set[str]) -> dict[str, Path]:
    smol, gemma = tok / "smollm2", tok / "gemma"
    out = {}
    if which & {"teacher1b", "small"}:
        out["teacher1b"] = make_model(work / "llama1b-teacher", shape("meta-llama--Llama-3.2-1B", tiny, vocab_size=49152,
                                                                     tie_word_embeddings=True), smol, device)
    if "small" in which:
        out["student135m"] = make_model(work / "smollm2-student", shape("smollm2-135m-instruct", tiny), smol, device)
        out["gemma"] = make_model(work / "gemma-teacher", shape("gemma-3-270m", tiny), gemma, device)
    if "research" in which:
        out["med42"] = make_model(work / "med42-teacher", shape("m42-health--Llama3-Med42-8B", tiny), smol, device)
    if which & {"research", "qlora"}:
        out["student1b"] = make_model(work / "llama1b-student", shape("meta-llama--Llama-3.2-1B", tiny), smol, device)
    return out


def case_config(name: str, work: Path, m: dict[str, Path], tiny: bool, steps: int):
    from distillm_edge.config import deep_merge
    from distillm_edge.training.config import resolve_config

    if name in VARIANTS:
        base, over = VARIANTS[name]
        cfg = case_config(base, work, m, tiny, steps)
        data = deep_merge(dataclass_dict(cfg), over | {"out": str(work / f"run-{name}")})
        return resolve_config(config_file=None, overrides=data)

    nf4 = "none" if tiny else "nf4"
    common = {"out": str(work / f"run-{name}"), "save_every": 0, "progress": False, "tensorboard": False,
              "log_every": 1, "real_eval": None, "precision": "bf16", "packing": True, "max_tokens_per_batch": 1024,
              "max_length": 1024, "batch_size": 1, "seed": 0}
    small = lambda: {  # noqa: E731 - built only for the cases that use these models
        "teachers": [{"model": str(m["teacher1b"]), "weight": 0.6, "quantization": nf4, "dtype": "bfloat16"},
                     {"model": str(m["gemma"]), "weight": 0.4, "quantization": nf4, "dtype": "bfloat16"}],
        "student": {"model": str(m["student135m"]), "layers": None, "dtype": "float32"},
        "hidden": {"weight": 1.0, "teacher": 0}, "layer_map": {"0": 0, "14": 8, "29": 15} if not tiny else {"1": 1},
        "grad_accum": 2, "lr": 1e-3, "warmup_steps": 10, "eval_examples": 27, "kd_weight": 0.8,
        "temperature": {"schedule": "progressive", "initial": 2.0, "floor": 1.0, "steps": max(1, steps // 3)},
    }
    if name == "small-nf4":
        return resolve_config("tiny-cpu", overrides=common | small() | {"max_steps": steps})
    if name == "8bit-ckpt":
        return resolve_config("tiny-cpu", overrides=common | small() | {"max_steps": steps, "eval_examples": 0,
                                                                       "optimizer": "adamw_8bit",
                                                                       "gradient_checkpointing": True})
    if name == "research-1gpu":
        return resolve_config("med42-llama", overrides=common | {
            "teachers": [{"model": str(m["med42"]), "weight": 1.0, "quantization": nf4, "dtype": "bfloat16"}],
            "student": {"model": str(m["student1b"]), "layers": None, "dtype": "float32"},
            "data": None, "max_steps": steps, "grad_accum": 4, "warmup_steps": 2, "eval_examples": 0,
            "specialty_weights": None})
    if name == "qlora":
        return resolve_config("tiny-cpu", overrides=common | {
            "teachers": [], "kd_weight": 0.0, "max_steps": steps, "grad_accum": 2, "eval_examples": 0, "lr": 2e-4,
            "student": {"model": str(m["student1b"]), "layers": None, "dtype": "bfloat16",
                        "quantization": nf4 if not tiny else "none"},
            "lora": {"r": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"]}})
    raise ValueError(name)


def train_case(name: str, work: Path, tok: Path, tiny: bool, steps: int) -> dict:
    import torch

    from distillm_edge.training import plan, trainer

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    base = VARIANTS[name][0] if name in VARIANTS else name
    which = {"small-nf4": {"small"}, "8bit-ckpt": {"small"}, "research-1gpu": {"research"}, "qlora": {"qlora"}}[base]
    t0 = time.perf_counter()
    m = models(work, tok, tiny, device, which)
    build_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = case_config(name, work, m, tiny, steps)
    gpus, mem = plan.local_devices()
    estimate = plan.estimate(cfg, plan.model_counts(cfg), plan.baseline_setup(cfg, gpus, mem)).devices[0]
    started = time.perf_counter()
    r = trainer.setup(cfg)  # trainer.run, with the memory held after setup read in between
    static = torch.cuda.memory_allocated() if cuda else None
    try:
        trainer.train(r)
        trainer.finish(r)
    finally:
        trainer.cleanup(r)
    out = r.run_dir
    seconds = time.perf_counter() - started
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("kind") == "train"]
    every = max(1, len(train) // 20)
    planned = sum(b for label, b in estimate.lines if RESERVE_LABEL not in label)
    peak = torch.cuda.max_memory_allocated() if cuda else None
    report = {}
    for f in ("summary.json",):
        if (Path(out) / f).is_file():
            report = json.loads((Path(out) / f).read_text())
            break
    return {"case": name, "device": torch.cuda.get_device_name(0) if cuda else "cpu", "steps": len(train),
            "build_s": round(build_s, 1), "run_s": round(seconds, 1),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in train[5:] or train),
            "mfu": statistics.median(r["mfu"] for r in train[5:] or train) if train and "mfu" in train[-1] else None,
            "target_tokens": train[-1]["target_tokens"] if train else 0,
            "peak_allocated_gib": peak / 2**30 if peak is not None else None,
        "after_setup_gib": static / 2**30 if static is not None else None,
            "planned_gib": planned / 2**30, "plan_error": (planned - peak) / peak if peak else None,
            "plan_lines": [(label, round(b / 2**30, 3)) for label, b in estimate.lines],
            "loss_curve": [(r["step"], round(r["loss"], 4)) for r in train[::every]] + (
                [(train[-1]["step"], round(train[-1]["loss"], 4))] if train else []),
            "parts_last": {k: round(v, 4) for k, v in train[-1].items() if k.startswith("loss/")} if train else {},
            "skipped_steps": sum(bool(r.get("skipped")) for r in train),
            "report": report}


def quant_cost_case(work: Path, tok: Path, tiny: bool) -> dict:
    import torch

    from distillm_edge.teachers.quantization_cost import QuantizationCostConfig, run

    cuda = torch.cuda.is_available()
    m = models(work, tok, tiny, "cuda" if cuda else "cpu", {"teacher1b"})
    data = next((work / "home/data").glob("builtin-*"))
    cfg = QuantizationCostConfig(teacher=str(m["teacher1b"]), data=str(data), quant=("nf4", "int8"),
                                 dtype="bfloat16", max_examples=32, device="cuda" if cuda else "cpu")
    started = time.perf_counter()
    result = run(cfg)
    return {"case": "quant-cost", "seconds": round(time.perf_counter() - started, 1), "result": result}


def child(name: str, work: Path, tok: Path, tiny: bool, steps: int) -> dict:
    if name == "quant-cost":
        return quant_cost_case(work, tok, tiny)
    return train_case(name, work, tok, tiny, steps)


def dataclass_dict(cfg) -> dict:
    """A resolved config back as the plain mapping the loader takes (tuples as lists)."""
    import dataclasses

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def environment() -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for pkg in ("transformers", "accelerate", "peft", "bitsandbytes", "datasets"):
        try:
            info[pkg] = __import__(pkg).__version__
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            info[pkg] = f"missing: {e}"
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="where results and each case's metrics go")
    parser.add_argument("--work", default="/tmp/gpu-check", help="scratch folder for the random models and runs")
    parser.add_argument("--tokenizers", default=str(ROOT / ".gpu/tok"),
                        help="folder with smollm2/ and gemma/ tokenizer files (a .gz is unpacked into --work)")
    parser.add_argument("--case", choices=CASES, action="append", help="run only these cases (repeatable)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; later cases are skipped past it")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and no NF4: a CPU rehearsal")
    parser.add_argument("--steps", type=int, default=0, help="steps per training case (0: each case's default)")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work, out, tok = Path(args.work), Path(args.out), Path(args.tokenizers)
    if args.child:
        default = {"small-nf4": 200, "research-1gpu": 6, "8bit-ckpt": 20, "qlora": 20, "quant-cost": 0,
                   "small-mfu": 30}.get(args.child, 3)
        result = child(args.child, work, tok, args.tiny, args.steps or default)
        print("RESULT " + json.dumps(result), flush=True)
        return
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if any(tok.glob("*/*.gz")):  # large tokenizer files travel compressed
        shutil.copytree(tok, work / "tok", dirs_exist_ok=True)
        tok = work / "tok"
        for gz in tok.glob("*/*.gz"):
            with gzip.open(gz, "rb") as src, open(gz.with_suffix(""), "wb") as dst:
                shutil.copyfileobj(src, dst)
            gz.unlink()
    started = time.perf_counter()
    results = [{"case": "environment", **environment()}]
    print(json.dumps(results[0]), flush=True)
    env = dict(os.environ, DISTILLM_EDGE_HOME=str(work / "home"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false")
    for name in args.case or CASES:
        left = args.budget - (time.perf_counter() - started)
        if left < 30:
            results.append({"case": name, "skipped": f"budget spent ({args.budget:.0f} s)"})
            print(json.dumps(results[-1]), flush=True)
            continue
        cmd = [sys.executable, __file__, "--child", name, "--work", str(work), "--out", str(out),
               "--tokenizers", str(tok), "--steps", str(args.steps)] + (["--tiny"] if args.tiny else [])
        log = out / f"{name}.log"
        with open(log, "w") as fh:
            try:
                proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=fh, text=True, timeout=min(left, CAP_S[name]))
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not lines:
                    tail = log.read_text()[-2500:]
                    results.append({"case": name, "failed": proc.returncode, "stderr_tail": tail})
                else:
                    results.append(json.loads(lines[-1][len("RESULT "):]))
            except subprocess.TimeoutExpired:
                results.append({"case": name, "failed": "timeout", "stderr_tail": log.read_text()[-2500:]})
        print(json.dumps(results[-1]), flush=True)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
        run_dir = work / f"run-{name}"
        if (run_dir / "metrics.jsonl").is_file():
            shutil.copy(run_dir / "metrics.jsonl", out / f"{name}.metrics.jsonl")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
