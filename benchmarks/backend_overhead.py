"""Benchmark: our inference backends against the runtimes' own generation loops, side by side.

Guards the overhead of ``distillm_edge.backends`` (the shared layer eval, export, bench, chat and
serve use): for the same model, thread count and prompts, it times

- ``LlamaCppBackend.stream`` vs llama-cpp-python's own ``Llama.generate`` (greedy, top_k=1), on the
  embedded SmolLM2-135M GGUF;
- ``OnnxBackend.stream`` vs onnxruntime-genai's own ``Generator`` loop (greedy), on SmolLM2-135M
  exported once to ONNX int4 by our exporter (cached in ``$DISTILLM_EDGE_HOME/bench/``; the
  genai_config's session options are set to the same thread count),

at 64- and 1024-token prompts (exactly N tokens of the shipped medical text, a different prompt
for every repetition so no run reuses a cached prefix). Each runtime gets its own model instance;
ours and theirs alternate repetition by repetition, so load drift hits both alike. It prints TTFT
(ms) and decode tokens/s (first token excluded), medians over repetitions, and the ratios
ours / theirs (decode: higher is better; TTFT: theirs / ours, so above 1 means we are faster).
The backends should stay at >= 0.96x of the runtimes. ``--onnx-concat`` adds a row for our ONNX
backend with its shared past/present KV buffer turned off (the cache grown by concatenation, as
before the shared buffer), timed against the same Generator in the same run: the before/after.
``--batch K`` adds rows for K sequences decoded together: our ``onnx_batch.batch_generate`` (what
``serve`` batches with) against onnxruntime-genai's ``Generator`` with ``batch_size=K``
(``bench.batch.onnx_batch_generate``), same prompts, EOS ignored; "TTFT" there is the prefill of
all K prompts and tok/s counts all K sequences.

Run: ``python benchmarks/backend_overhead.py`` (3 repetitions after 1 warm-up, 64 new tokens;
about 4 min on 2 quiet cores, plus a one-off ONNX export) or
``python benchmarks/backend_overhead.py --repeats 5 --new-tokens 128 --backends gguf``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def timed(tokens, n_prompt: int) -> tuple[float, float, int]:
    """(TTFT s, decode tokens/s, generated) of a lazy token iterator, timed from outside."""
    from distillm_edge.bench.measure import stream_stats, time_stream

    stats = stream_stats(time_stream(tokens), n_prompt)
    return stats.ttft_s, stats.decode_tps, stats.generated


def llama_generate(llm, ids: list[int], n: int):
    """llama-cpp-python's own loop: ``Llama.generate`` with greedy sampling, first ``n`` tokens."""
    for i, token in enumerate(llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True)):
        yield token
        if i + 1 >= n or token == llm.token_eos():
            return


def genai_generate(model, ids: list[int], n: int):
    """onnxruntime-genai's own loop: ``Generator`` with greedy search, first ``n`` tokens."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + n)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    while not generator.is_done():
        generator.generate_next_token()
        yield int(generator.get_next_tokens()[0])


def onnx_model_dir(threads: int) -> Path:
    """SmolLM2-135M exported to ONNX int4 once (our exporter), with the genai session using ``threads``."""
    from distillm_edge.export.onnx_convert import build_onnx
    from distillm_edge.io import atomic_dir, home
    from distillm_edge.models import local_dir

    out = home() / "bench" / "smollm2-135m-instruct-onnx-int4"
    if not (out / "genai_config.json").is_file():
        src = Path(local_dir("smollm2-135m-instruct", progress=False))
        print(f"exporting SmolLM2-135M to ONNX int4 into {out} (once)", flush=True)
        with atomic_dir(out) as tmp:
            build_onnx(src, tmp, "int4", 30)
    config_file = out / "genai_config.json"
    config = json.loads(config_file.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    options.update({"intra_op_num_threads": threads, "inter_op_num_threads": 1})
    config_file.write_text(json.dumps(config, indent=2))
    return out


def compare(name: str, ours_stream, theirs_stream, builder, lengths, repeats: int, new_tokens: int) -> list[dict]:
    rows = []
    for n in lengths:
        runs = {"ours": [], "theirs": []}
        for rep in range(repeats + 1):  # repetition 0 is the warm-up of both
            for who, stream in (("ours", ours_stream), ("theirs", theirs_stream)):
                ids = builder.prompt(n, 2 * rep + (who == "theirs"))
                result = timed(stream(ids, new_tokens), n)
                if rep:
                    runs[who].append(result)
        med = {who: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs),
                     min(r[2] for r in rs)) for who, rs in runs.items()}
        rows.append({"backend": name, "prompt": n, "ours": med["ours"], "theirs": med["theirs"]})
        print(f"  {name} @ {n}: ours TTFT {1000 * med['ours'][0]:.0f} ms, {med['ours'][1]:.1f} tok/s; "
              f"theirs TTFT {1000 * med['theirs'][0]:.0f} ms, {med['theirs'][1]:.1f} tok/s", flush=True)
    return rows


def compare_batch(ours, model, folder: Path, builder, lengths, k: int, repeats: int, new_tokens: int) -> list[dict]:
    """Batched greedy decoding of ``k`` equal-length prompts: ours vs onnxruntime-genai's, alternating."""
    from types import SimpleNamespace

    from distillm_edge.backends.onnx_batch import BatchDecoder, batch_generate
    from distillm_edge.bench.batch import onnx_batch_generate

    genai = SimpleNamespace(path=folder, _og_model=model)
    rows = []
    for n in lengths:
        decoder = BatchDecoder(ours, k, n + new_tokens)
        runs = {"ours": [], "theirs": []}
        for rep in range(repeats + 1):
            for who in ("ours", "theirs"):
                prompts = [builder.prompt(n, 100 + (2 * rep + (who == "theirs")) * k + i) for i in range(k)]
                result = (batch_generate(decoder, prompts, new_tokens) if who == "ours"
                          else onnx_batch_generate(genai, prompts, new_tokens))
                if rep:
                    runs[who].append((result["prefill_s"], result["decode_tps"], k * new_tokens))
        med = {who: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs), rs[0][2])
               for who, rs in runs.items()}
        rows.append({"backend": f"ONNX Runtime batch {k}", "prompt": n, "ours": med["ours"], "theirs": med["theirs"]})
        print(f"  ONNX batch {k} @ {n}: ours prefill {1000 * med['ours'][0]:.0f} ms, {med['ours'][1]:.1f} tok/s; "
              f"theirs prefill {1000 * med['theirs'][0]:.0f} ms, {med['theirs'][1]:.1f} tok/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="gguf,onnx")
    parser.add_argument("--lengths", default="64,1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="0: physical cores")
    parser.add_argument("--onnx-concat", action="store_true",
                        help="also time our ONNX backend with the KV cache grown by concatenation")
    parser.add_argument("--batch", type=int, default=0, help="also time K ONNX sequences decoded together")
    args = parser.parse_args()

    from distillm_edge.bench.machine import load_average, physical_cores
    from distillm_edge.bench.prompts import PromptBuilder

    threads = args.threads or physical_cores()
    lengths = [int(x) for x in args.lengths.split(",")]
    n_ctx = max(lengths) + args.new_tokens + 64
    load_start, rows = load_average(), []

    if "gguf" in args.backends:
        from llama_cpp import Llama

        from distillm_edge.backends.llamacpp_backend import LlamaCppBackend
        from distillm_edge.export.gguf_quantize import captured_llama_log
        from distillm_edge.models.sources import gguf_path, resolve

        path = gguf_path(resolve("smollm2-135m-instruct"))
        ours = LlamaCppBackend(str(path), threads=threads, n_ctx=n_ctx)
        with captured_llama_log():
            theirs = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                           n_threads_batch=threads, logits_all=False, verbose=False)
        print(f"llama.cpp: {path.name}, {threads} threads", flush=True)
        rows += compare("llama.cpp", ours.stream, lambda ids, n: llama_generate(theirs, ids, n),
                        PromptBuilder(ours.tokenize), lengths, args.repeats, args.new_tokens)
        ours.close()
        theirs.close()

    if "onnx" in args.backends:
        import onnxruntime_genai as og

        from distillm_edge.backends.onnx_backend import OnnxBackend

        folder = onnx_model_dir(threads)
        ours = OnnxBackend(str(folder), threads=threads)
        model = og.Model(str(folder))
        print(f"ONNX Runtime: {folder.name}, {threads} threads", flush=True)
        print(f"ours: shared past/present KV buffer = {ours.share_buffer}", flush=True)
        rows += compare("ONNX Runtime", ours.stream, lambda ids, n: genai_generate(model, ids, n),
                        PromptBuilder(ours.tokenize), lengths, args.repeats, args.new_tokens)
        if args.batch:
            rows += compare_batch(ours, model, folder, PromptBuilder(ours.tokenize), lengths, args.batch,
                                  args.repeats, args.new_tokens)
        ours.close()
        if args.onnx_concat:
            ours = OnnxBackend(str(folder), threads=threads, share_buffer=False)
            rows += compare("ONNX Runtime (concat cache)", ours.stream,
                            lambda ids, n: genai_generate(model, ids, n),
                            PromptBuilder(ours.tokenize), lengths, args.repeats, args.new_tokens)
            ours.close()

    load_end = load_average()
    print(f"\n{args.repeats} repetitions after 1 warm-up, {args.new_tokens} new tokens, medians; "
          f"load average {load_start} -> {load_end}")
    print("| backend | prompt | our TTFT ms | runtime TTFT ms | TTFT ratio (runtime/ours) | our tok/s | "
          "runtime tok/s | decode ratio (ours/runtime) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        (ot, od, _), (tt, td, _) = r["ours"], r["theirs"]
        print(f"| {r['backend']} | {r['prompt']} | {1000 * ot:.0f} | {1000 * tt:.0f} | {tt / ot:.2f}x | {od:.1f} | "
              f"{td:.1f} | {od / td:.2f}x |")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
