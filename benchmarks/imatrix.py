"""Benchmark: held-out perplexity of llama.cpp's low-bit types with and without an importance matrix.

For each model (the embedded SmolLM2-135M-Instruct; ``student``: the trainer's newest output under
``runs/``, else a layer-cut SmolLM2, as ``benchmarks/export.py`` picks it), this script writes the
f32 GGUF once, computes the imatrix once on the built-in corpus's calibration records
(``distillm_edge.export.imatrix``; every 4th record is held out and never calibrated on), then
quantizes each type in ``--types`` twice through llama.cpp's quantizer, plain and with the imatrix,
and scores every file on the held-out records with llama.cpp (``LlamaCppBackend.token_logprobs``).
It prints one table: perplexity of f32 and of each quantization, the increase over f32, and how
much of the plain increase the imatrix removes, with the load average before and after.

Run: ``python benchmarks/imatrix.py`` (SmolLM2 and the student, Q4_K_M / Q3_K_M / IQ4_XS; about
5 min on 2 quiet cores) or ``python benchmarks/imatrix.py --models smollm2 --types q4_k_m``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def perplexity(path: Path, texts: list[str], threads: int) -> tuple[float, int]:
    from distillm_edge.backends.llamacpp_backend import LlamaCppBackend

    backend = LlamaCppBackend(str(path), threads=threads, n_ctx=1024)
    try:
        nll, n = 0.0, 0
        for text in texts:
            lp = backend.token_logprobs(backend.tokenize(text)[:1024])
            nll, n = nll - float(lp.sum()), n + lp.size
    finally:
        backend.close()
    return math.exp(nll / n), n


def model_dir(name: str) -> Path:
    if name == "smollm2":
        from distillm_edge.models import local_dir

        return Path(local_dir("smollm2-135m-instruct", progress=False))
    if name == "student":
        from export import student_dir  # benchmarks/export.py

        return student_dir()
    return Path(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="smollm2,student", help="comma list of: smollm2, student, or a path")
    parser.add_argument("--types", default="q4_k_m,q3_k_m,iq4_xs")
    parser.add_argument("--threads", type=int, default=0,
                        help="0: physical cores (on a busy machine use 1: llama.cpp's threads collapse under load)")
    parser.add_argument("--held-out", type=int, default=0, help="score only the first N held-out records (0: all)")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from distillm_edge.bench.machine import load_average, physical_cores
    from distillm_edge.export import imatrix as im
    from distillm_edge.export.checkpoint import open_checkpoint
    from distillm_edge.export.gguf_convert import write_gguf
    from distillm_edge.export.gguf_quantize import quantize

    threads = args.threads or physical_cores()
    held = im.held_out_texts()[: args.held_out or None]
    load_start = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="imatrix-bench-") as tmp:
        tmp = Path(tmp)
        for name in args.models.split(","):
            src = model_dir(name)
            f32 = tmp / f"{name}-f32.gguf"
            write_gguf(open_checkpoint(src), AutoTokenizer.from_pretrained(src), f32, "f32", name)
            started = time.perf_counter()
            matrix = im.compute(src, im.calibration_texts(), threads=threads)
            im.write_imatrix(matrix, tmp / f"{name}.imatrix.gguf")
            values = im.read_imatrix(tmp / f"{name}.imatrix.gguf").values()
            calib_s = time.perf_counter() - started
            base, tokens = perplexity(f32, held, threads)
            print(f"{name}: imatrix over {matrix.chunk_count} chunks of {matrix.chunk_size} tokens in {calib_s:.0f} s; "
                  f"f32 held-out perplexity {base:.3f} over {tokens} tokens", flush=True)
            for quant in args.types.split(","):
                result = {}
                for label, imatrix in (("plain", None), ("imatrix", values)):
                    out = tmp / f"{name}-{quant}-{label}.gguf"
                    report = quantize(f32, out, quant, threads, imatrix=imatrix)
                    missing = [t for t in report.imatrix_missing if t.startswith("blk.")]
                    assert not missing, f"imatrix entries not found by llama.cpp: {missing}"
                    result[label] = (perplexity(out, held, threads)[0], out.stat().st_size)
                    out.unlink()
                rows.append((name, quant, base, result))
                plain, weighted = result["plain"][0], result["imatrix"][0]
                print(f"  {quant}: plain {plain:.3f}, imatrix {weighted:.3f}", flush=True)
            f32.unlink()
    load_end = load_average()

    print(f"\nheld-out perplexity, {len(held)} built-in records never used for calibration; "
          f"{threads} threads; load average {load_start} -> {load_end}")
    print("| model | type | MiB | f32 ppl | plain ppl (Δ) | imatrix ppl (Δ) | share of the plain Δ removed |")
    print("|---|---|---|---|---|---|---|")
    for name, quant, base, result in rows:
        (plain, size), (weighted, _) = result["plain"], result["imatrix"]
        removed = (plain - weighted) / (plain - base) if plain != base else float("nan")
        print(f"| {name} | {quant.upper()} | {size / 2**20:.0f} | {base:.3f} | {plain:.3f} ({plain / base - 1:+.2%}) | "
              f"{weighted:.3f} ({weighted / base - 1:+.2%}) | {removed:.0%} |")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
