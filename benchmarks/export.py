"""Benchmark: ``distillm-edge export`` per format and quantization, with the parity figures.

For each model (the embedded SmolLM2-135M-Instruct and a small student: the trainer's newest
output under ``runs/`` if one exists, else a layer-cut SmolLM2 "first-last:8,7" built once into
``$DISTILLM_EDGE_HOME/bench/``), exports every type in ``--types`` through ``export.run`` — the
same code as the command, verification included — and prints one table: export seconds (wall and
process CPU; the CPU figure is the steadier one on a shared machine), file size, bits per weight,
mean KL, top-1 agreement, identical greedy continuations, perplexity increase, verified. The
source model's reference outputs are computed once per model and reused for all its exports.

Run: ``python benchmarks/export.py`` (all defaults: the full parity set, as the command uses;
~10 min on 2 quiet cores), or a quicker pass on a busy machine, e.g.
``python benchmarks/export.py --prompts 6 --new-tokens 32 --threads 2`` (parity figures then
cover the first 6 prompts and 32-token continuations; the table title says so).
Artifacts go to ``--outdir`` (default: a temporary directory, removed afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_TYPES = "gguf:f16,gguf:q8_0,gguf:q4_k_m,onnx:fp32,onnx:int4"


def student_dir() -> Path:
    """The newest trained student under runs/, else a layer-cut SmolLM2 saved once in the cache."""
    runs = Path(__file__).resolve().parents[1] / "runs"
    trained = sorted((p.parent for p in runs.glob("**/config.json") if (p.parent / "model.safetensors").is_file()),
                     key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    if trained:
        return trained[-1]
    from distillm_edge.io import home

    out = home() / "bench" / "smollm2-student-first-last-8-7"
    if not (out / "model.safetensors").is_file():
        from distillm_edge.models import build_student, load_model, select_layers

        model, tokenizer = load_model("smollm2-135m-instruct", progress=False)
        student = build_student(model, select_layers(model.config.num_hidden_layers, "first-last:8,7"))
        student.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the ONNX builder runs as a subprocess)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="smollm2,student", help="comma list of: smollm2, student, or a path")
    parser.add_argument("--types", default=DEFAULT_TYPES, help=f"comma list of format:quant (default {DEFAULT_TYPES})")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--outdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--prompts", type=int, default=0, help="use only the first N parity prompts (0: all)")
    parser.add_argument("--new-tokens", type=int, default=0, help="greedy continuation length (0: the command's 64)")
    args = parser.parse_args()

    from distillm_edge.export import parity

    full = parity.load_inputs()
    if args.prompts:  # a lighter parity set for busy machines; the table title states it
        subset = parity.ParityInputs(full.prompts[: args.prompts], full.texts)
        parity.load_inputs = lambda: subset
    if args.new_tokens:
        parity.MAX_NEW_TOKENS = args.new_tokens
    scope = f"{len(parity.load_inputs().prompts)} prompts, {parity.MAX_NEW_TOKENS}-token greedy, {len(full.texts)} texts"

    from rich.console import Console
    from rich.table import Table

    from distillm_edge.export import ExportConfig, run

    specs = {"smollm2": "smollm2-135m-instruct", "student": None}
    outdir = args.outdir or Path(tempfile.mkdtemp(prefix="distillm-export-bench-"))
    rows = []
    for key in args.models.split(","):
        model = specs.get(key) or (str(student_dir()) if key == "student" else key)
        reference = None
        for item in args.types.split(","):
            fmt, quant = item.split(":")
            cfg = ExportConfig(model=model, format=fmt, quant=quant, outdir=outdir / key, threads=args.threads)
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            result = run(cfg, reference=reference)
            reference = result.reference
            m, p = result.manifest, result.manifest["parity"]
            rows.append({
                "model": key, "format": fmt, "quant": quant, "export_s": m["export"]["seconds"],
                "total_s": round(time.perf_counter() - wall0, 1), "cpu_s": round(cpu_seconds() - cpu0, 1),
                "mib": round(m["total_bytes"] / 2**20, 1), "bpw": m["bits_per_weight"], "kl": p["mean_kl"],
                "top1": p["top1_agreement"], "greedy": f"{p['greedy_identical']}/{p['greedy_prompts']}" + (f"+{p['greedy_tie_parted']}t" if p.get("greedy_tie_parted") else ""),
                "greedy_prefix": p["greedy_mean_prefix"], "ppl_src": p["ppl_source"], "ppl_art": p["ppl_artifact"],
                "ppl_inc": p["ppl_increase"], "verified": m["verified"], "failures": m["failures"],
            })

    table = Table(title=f"distillm-edge export benchmark ({os.cpu_count()} CPUs, threads={args.threads or 'all'}; "
                        f"parity: {scope})")
    for col in ("model", "type", "export s", "export+verify s (cpu s)", "MiB", "bits/w", "mean KL", "top-1",
                "greedy same", "ppl src→art", "Δppl", "verified"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], f"{r['format']} {r['quant']}", f"{r['export_s']:.1f}", f"{r['total_s']:.0f} ({r['cpu_s']:.0f})",
                      f"{r['mib']:.1f}", f"{r['bpw']:.2f}", f"{r['kl']:.2e}", f"{r['top1']:.2%}",
                      f"{r['greedy']} ({r['greedy_prefix']:.0f})", f"{r['ppl_src']:.1f}→{r['ppl_art']:.1f}",
                      f"{r['ppl_inc']:+.1%}", "yes" if r["verified"] else "NO")
    Console(width=200).print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.outdir is None:
        import shutil

        shutil.rmtree(outdir, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
