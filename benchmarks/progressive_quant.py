"""Benchmark: does progressive quantization-aware training help the 4-bit student we ship?

Trains the default ``tiny-cpu`` recipe twice with the same seed and step budget (``--max-steps``),
once as is and once with ``fake_quant`` (the student's block linears fake-quantized, bits falling
16 → 8 → 4 at 0 / 33% / 66% of the run; ``training/fakequant.py``). Each student is then exported
through the project's own exporter (``export.run``, verification off: this script measures
instead) to GGUF Q4_K_M and to ONNX int4, and every artifact, with the fp32 student itself, is
scored through the shared inference backends (torch / llama.cpp / ONNX Runtime) on the same
token ids:

- the run's held-out split (the first ``eval_examples`` records of the prepared data's ``valid``,
  as the trainer's before/after table), response tokens only;
- real medical Q&A the run never saw: the last ``--real`` records of ``real_eval`` (medalpaca in
  ``../shared/data``, as the trainer's generalization check); skipped with the reason when absent.

Printed: for each set, rows fp32 / Q4_K_M / ONNX int4 and columns perplexity without and with
progressive quantization, their ratio, and each artifact's quantization cost (artifact / fp32) in
both runs; then what the exporters actually wrote (GGUF tensor types, ONNX MatMulNBits widths), and
how far the trainer's 4-bit grid is from the GGUF's weights, per llama.cpp type (``scheme_check``).
The trainers' own end-of-run evaluations are turned off (this script scores everything itself).
Runs and exports are kept under ``--out`` and reused by a rerun.

What the scheme check showed (max_steps 20, 2026-11-30): the fake-quant grid (4-bit, groups of 32,
asymmetric with an integer zero point) is the family of ONNX int4 (ORT k-quant: groups of 32, uint8
zero point), and there it helped (quantization cost 1.20x -> 1.07x held-out). The GGUF "Q4_K_M" of a
576-wide SmolLM2 student is mostly not 4-bit: llama.cpp's k-quants need rows that are a multiple of
256, so 83 of the 106 quantized tensors fall back to Q5_0 (5-bit, symmetric) and only 8 are Q4_K. And the
embedded SmolLM2 is itself dequantized from a Q4_1 GGUF, so the student's weights start on a 4-bit
float-minimum grid that Q4_K finds again (|Q4_K - w| = 2% of |w| vs 8.8% for the trainer's grid):
the GGUF export is cheap already (x1.03 on medalpaca) and training for another grid did not help it.

Run: ``nice -n 10 python benchmarks/progressive_quant.py --max-steps 20 --out runs/pq`` (~25-40 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

VARIANTS = ("without", "with")
ARTIFACTS = (("student fp32", "torch", None), ("GGUF Q4_K_M", "gguf", "q4_k_m"), ("ONNX int4", "onnx", "int4"))


def train(variant: str, args, root: Path) -> Path:
    """The variant's run directory (trained now unless its summary.json is already there)."""
    from distillm_edge.training import trainer
    from distillm_edge.training.config import resolve_config

    out = root / f"train-{variant}"
    if (out / "summary.json").is_file():
        print(f"[{variant}] reusing {out}", flush=True)
        return out
    overrides = {"max_steps": args.max_steps, "out": str(out), "eval_examples": 0, "real_eval": None,
                 "progress": False, "tensorboard": False, "save_every": 0, "threads": args.threads}
    if variant == "with":
        overrides["fake_quant"] = {"schedule": [[0.0, 16], [0.33, 8], [0.66, 4]]}
    cfg = resolve_config("tiny-cpu", overrides=overrides)
    started = time.perf_counter()
    trainer.run(cfg)
    print(f"[{variant}] trained in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return out


def export(model_dir: Path, fmt: str, quant: str, outdir: Path, threads: int) -> tuple[Path, dict]:
    """The artifact (exported now unless present) and its manifest's export details."""
    from distillm_edge.export.config import ExportConfig
    from distillm_edge.export.run import run as export_run

    artifact = outdir / (f"model-{quant}.gguf" if fmt == "gguf" else f"model-onnx-{quant}")
    manifest = artifact.with_suffix(".manifest.json") if fmt == "gguf" else artifact / "manifest.json"
    if not manifest.is_file():
        export_run(ExportConfig(model=str(model_dir), format=fmt, quant=quant, outdir=outdir, verify=False, threads=threads))
    return artifact, json.loads(manifest.read_text(encoding="utf-8"))["export"]


def eval_sets(model_dir: Path, args) -> dict[str, list]:
    """{set name: encoded examples} on the student's tokenizer: the held-out split and (if present) medalpaca."""
    from transformers import AutoTokenizer

    from distillm_edge.data import load_prepared
    from distillm_edge.training.batches import encode_records
    from distillm_edge.training.config import resolve_config
    from distillm_edge.training.evaluation import real_eval_path, real_records
    from distillm_edge.training.trainer import prepared_data

    cfg = resolve_config("tiny-cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    valid = list(load_prepared(prepared_data(cfg, tokenizer))["valid"])[: cfg.eval_examples]
    sets = {"held-out": valid}
    path = real_eval_path(cfg.real_eval) if cfg.real_eval else None
    if path is None:
        print(f"medalpaca: {cfg.real_eval} not found; the real-data rows are skipped", flush=True)
    else:
        sets["medalpaca"] = real_records(path, args.real)
    return {name: encode_records(recs, tokenizer, {}, cfg.max_length, train_on_prompt=cfg.train_on_prompt)[0]
            for name, recs in sets.items()}


def perplexity(backend, examples) -> float:
    """Response-token perplexity of ``backend`` on the examples' student token ids."""
    from distillm_edge.eval.text_metrics import perplexity as ppl

    scored = []
    for e in examples:
        lp = backend.token_logprobs(list(e.student.ids), 1)
        scored.append(lp[np.asarray(e.student.counted[1:], dtype=bool)])
    return ppl(scored)


def open_artifact(kind: str, path: Path, threads: int):
    if kind == "torch":
        from distillm_edge.backends.torch_backend import TorchBackend

        return TorchBackend(str(path), threads=threads)
    from distillm_edge.export.run import open_artifact as open_exported

    return open_exported(path, kind, threads)


GGUF_TO_HF = {"attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
              "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}  # q/k are row-permuted by the converter: left out


def scheme_check(model_dir: Path, gguf_path: Path) -> str:
    """How close the trainer's 4-bit fake-quant grid is to what the GGUF holds, per llama.cpp tensor type: mean
    |error| of the shipped weights and of fake_quantize(w, 4) against the fp32 weights, and their distance."""
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.torch import load_file

    from distillm_edge.training.ablation import text_table
    from distillm_edge.training.fakequant import fake_quantize

    weights = load_file(str(model_dir / "model.safetensors"))
    sums: dict[str, list[float]] = {}
    for t in GGUFReader(gguf_path).tensors:
        parts = t.name.split(".")  # blk.N.<kind>.weight
        if len(parts) != 4 or parts[2] not in GGUF_TO_HF:
            continue
        w = weights[f"model.layers.{parts[1]}.{GGUF_TO_HF[parts[2]]}.weight"].float()
        shipped = torch.from_numpy(dequantize(t.data, t.tensor_type).reshape(w.shape).astype(np.float32))
        fq = fake_quantize(w, 4, 32, symmetric=False)
        acc = sums.setdefault(t.tensor_type.name, [0, 0.0, 0.0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += float(w.abs().sum())
        acc[2] += float((shipped - w).abs().sum())
        acc[3] += float((fq - w).abs().sum())
        acc[4] += float((fq - shipped).abs().sum())
    body = [[kind, str(n), f"{100 * a / total:.2f}%", f"{100 * b / total:.2f}%", f"{100 * c / total:.2f}%"]
            for kind, (n, total, a, b, c) in sorted(sums.items())]
    head = ["GGUF type", "tensors (v/o/gate/up/down)", "|shipped - w| / |w|", "|fake-quant 4-bit - w| / |w|",
            "|fake-quant - shipped| / |w|"]
    return text_table(head, body)


def table(title: str, results: dict, set_name: str) -> str:
    from distillm_edge.training.ablation import text_table

    fp = {v: results[v]["student fp32"][set_name] for v in VARIANTS}
    body = []
    for label, _, _ in ARTIFACTS:
        a, b = results["without"][label][set_name], results["with"][label][set_name]
        body.append([label, f"{a:.2f}", f"{b:.2f}", f"{b / a:.3f}", f"{a / fp['without']:.3f}", f"{b / fp['with']:.3f}"])
    head = ["perplexity", "without", "with progressive quant", "with / without", "x fp32 (without)", "x fp32 (with)"]
    return f"{title}\n{text_table(head, body)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-steps", type=int, default=20, help="optimizer steps of each training run (default 20)")
    parser.add_argument("--out", default=None, help="working directory (default runs/progressive-quant-<time>)")
    parser.add_argument("--real", type=int, default=100, help="medalpaca records scored (the last N; default 100)")
    parser.add_argument("--threads", type=int, default=2, help="torch / llama.cpp / ONNX Runtime threads (default 2)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    root = Path(args.out or f"runs/progressive-quant-{time.strftime('%Y%m%d-%H%M%S')}")
    root.mkdir(parents=True, exist_ok=True)
    started, load0 = time.perf_counter(), os.getloadavg()
    runs = {v: train(v, args, root) for v in VARIANTS}
    sets = eval_sets(runs["without"] / "model", args)
    results: dict = {v: {} for v in VARIANTS}
    shipped: dict = {}
    for v in VARIANTS:
        for label, kind, quant in ARTIFACTS:
            if quant is None:
                path = runs[v] / "model"
            else:
                path, details = export(runs[v] / "model", kind, quant, root / f"export-{v}", args.threads)
                shipped[label] = details
            backend = open_artifact(kind, path, args.threads)
            try:
                results[v][label] = {name: perplexity(backend, ex) for name, ex in sets.items()}
            finally:
                getattr(backend, "close", lambda: None)()
            print(f"[{v}] {label}: " + ", ".join(f"{k} {x:.2f}" for k, x in results[v][label].items()), flush=True)
    minutes, load1 = (time.perf_counter() - started) / 60, os.getloadavg()
    tokens = {name: sum(sum(e.student.counted[1:]) for e in ex) for name, ex in sets.items()}
    print(f"\nProgressive quantization: tiny-cpu, max_steps {args.max_steps}, seed 0, both runs identical except fake_quant "
          f"(schedule [[0, 16], [0.33, 8], [0.66, 4]], group 32, asymmetric). {minutes:.1f} min wall; load average "
          f"{load0[0]:.1f} at start, {load1[0]:.1f} at end.\n")
    for name in sets:
        print(table(f"{name} ({len(sets[name])} records, {tokens[name]} response tokens)", results, name) + "\n")
    for label, details in shipped.items():
        what = details.get("tensor_types") or details.get("applied")
        print(f"{label} as written by the exporter: {what}")
    fallbacks = shipped.get("GGUF Q4_K_M", {}).get("fallbacks") or {}
    if fallbacks:
        used = sorted({f"{f['wanted']}->{f['used']}" for f in fallbacks.values()})
        print(f"  llama.cpp fallbacks: {len(fallbacks)} tensors ({', '.join(used)}): rows not a multiple of 256")
    print("\nThe trainer's 4-bit grid (group 32, asymmetric) against the GGUF Q4_K_M weights of the run with it:")
    print(scheme_check(runs["with"] / "model", root / "export-with" / "model-q4_k_m.gguf"))
    out = {"max_steps": args.max_steps, "minutes": minutes, "loadavg": [load0, load1], "tokens": tokens,
           "results": results, "shipped": shipped}
    (root / "progressive_quant.json").write_text(json.dumps(out, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
