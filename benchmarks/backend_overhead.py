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
``--batch 1,4,8`` adds rows for K sequences decoded together, three ways on the same prompts, EOS
ignored: our ``onnx_batch.batch_generate`` (what ``serve`` batches with) against onnxruntime-genai's
``Generator`` with ``batch_size=K`` (``bench.batch.onnx_batch_generate``) and against its ``Engine``
with K requests begun together (:func:`engine_batch_generate`; on CPU the Engine batches statically,
see ``onnx_batch.py``). "TTFT" there is the prefill of all K prompts (for the Engine it includes
allocating the batch's KV cache), tok/s counts all K sequences (decode: the tokens after every row has its
first one, since the Engine can run rows ahead in waves; "all": every token over prefill + decode), and a line says whether all three gave
the same greedy tokens. ``--arrivals`` shows why ``serve`` does not use the Engine: a request that
arrives while another is decoding, and how long it waits for its first token under the Engine and
under our ``OnnxSlotScheduler`` (plus what the Engine refuses on CPU).

Run: ``python benchmarks/backend_overhead.py`` (3 repetitions after 1 warm-up, 64 new tokens;
about 4 min on 2 quiet cores, plus a one-off ONNX export) or
``python benchmarks/backend_overhead.py --repeats 5 --new-tokens 128 --backends gguf`` or
``python benchmarks/backend_overhead.py --backends onnx --lengths 64 --batch 1,4,8 --arrivals``.
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


def engine_batch_generate(engine, prompts: list[list[int]], new_tokens: int, clock=time.perf_counter) -> dict:
    """Greedy-decode exactly ``new_tokens`` for every prompt as requests of one onnxruntime-genai
    ``Engine``, all begun before its first step (EOS masked by ``min_generated_tokens``)."""
    import numpy as np
    import onnxruntime_genai as og

    from distillm_edge.backends.slots import batch_timings

    buffer = engine.create_event_buffer(4 * len(prompts))
    requests = []
    for prompt in prompts:
        options = og.RequestOptions()
        options.set_max_session_tokens(len(prompt) + new_tokens)  # else the cache spans the whole context
        request = engine.create_request(options=options)
        turn = og.TurnOptions(request)
        turn.set_do_sample(False)
        turn.set_max_generated_tokens(new_tokens)
        turn.set_min_generated_tokens(new_tokens)
        request.begin_turn(np.asarray(prompt, dtype=np.int32), turn)
        requests.append(request)
    tokens: list[list[int]] = [[] for _ in prompts]
    start, first, firsts, done_at_first = clock(), None, [None] * len(prompts), 0
    while engine.has_pending_requests():
        for event in engine.run(buffer):  # events are views into the buffer: read them before the next run
            if event.flags.value & og.EngineEventFlags.FAILED.value:
                raise RuntimeError(f"onnxruntime-genai Engine failed: {event.error_code.name}")
            if event.flags.value & og.EngineEventFlags.TOKEN.value:
                tokens[next(i for i, r in enumerate(requests) if r is event.request)].append(int(event.token))
        now = clock()
        firsts = [f if f is not None or not t else now for f, t in zip(firsts, tokens)]
        if first is None and all(tokens):
            first, done_at_first = now, sum(map(len, tokens))
    end = clock()
    for request in requests:
        request.close()
    timings = batch_timings(tokens, new_tokens, start, first, end)
    # The Engine may give some rows many tokens before the last row's first one (waves of its static
    # batch): decode counts only the tokens generated after every row has started.
    timings["decode_tps"] = (sum(map(len, tokens)) - done_at_first) / (end - first) if end > first else float("nan")
    timings["first_spread_s"] = max(firsts) - min(firsts)
    return timings


def genai_engine(folder: Path, max_batch: int):
    """onnxruntime-genai's ``Engine`` over the export, its static batch widened to ``max_batch`` rows."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.overlay(json.dumps({"engine": {"static_batching": {"max_batch_size": max_batch}}}))
    return og.Engine(og.Model(config))


def compare_batch(ours, model, folder: Path, builder, lengths, sizes, repeats: int, new_tokens: int) -> list[dict]:
    """Batched greedy decoding of ``k`` equal-length prompts: ours vs genai's Generator vs genai's Engine,
    alternating repetition by repetition."""
    from types import SimpleNamespace

    from distillm_edge.backends.onnx_batch import BatchDecoder, batch_generate
    from distillm_edge.bench.batch import onnx_batch_generate

    genai = SimpleNamespace(path=folder, _og_model=model)
    engine = genai_engine(folder, max(sizes))
    rows = []
    for k in sizes:
        for n in lengths:
            decoder = BatchDecoder(ours, k, n + new_tokens)
            runs = {"ours": [], "generator": [], "engine": []}
            same = True
            for rep in range(repeats + 1):  # repetition 0 is the warm-up of all three
                prompts = [builder.prompt(n, 100 + rep * k + i) for i in range(k)]
                tokens = {}
                order = list(runs)[rep % 3:] + list(runs)[: rep % 3]  # who goes first rotates: load drift hits all
                for who in order:
                    result = (batch_generate(decoder, prompts, new_tokens) if who == "ours" else
                              onnx_batch_generate(genai, prompts, new_tokens) if who == "generator" else
                              engine_batch_generate(engine, prompts, new_tokens))
                    tokens[who] = result["tokens"]
                    if rep:
                        runs[who].append((result["prefill_s"], result["decode_tps"], k * new_tokens,
                                          result["total_tps"], result.get("first_spread_s", 0.0)))
                same = same and tokens["ours"] == tokens["generator"] == tokens["engine"]
            med = {who: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs), rs[0][2])
                   for who, rs in runs.items()}
            for theirs in ("generator", "engine"):
                rows.append({"backend": f"ONNX batch {k} vs genai {theirs}", "prompt": n, "ours": med["ours"],
                             "theirs": med[theirs]})
            total = {who: statistics.median(r[3] for r in rs) for who, rs in runs.items()}
            spread = statistics.median(r[4] for r in runs["engine"])
            print(f"  ONNX batch {k} @ {n}: " + "; ".join(
                f"{who} prefill {1000 * m[0]:.0f} ms, decode {m[1]:.1f} tok/s, all {total[who]:.1f} tok/s"
                for who, m in med.items())
                + f"; engine rows' first tokens spread over {1000 * spread:.0f} ms"
                + f"; same greedy tokens: {'yes' if same else 'NO'}"
                + f"; all tokens (prefill + decode) ours/generator {total['ours'] / total['generator']:.2f}x, "
                  f"ours/engine {total['ours'] / total['engine']:.2f}x", flush=True)
    return rows


def arrivals(ours, folder: Path, builder, n: int, new_tokens: int, late_after: int = 4) -> None:
    """Request A (``new_tokens`` long) starts alone; B arrives once A has ``late_after`` tokens. How many
    of A's tokens come before B's first one, and B's wait, under genai's Engine and our scheduler."""
    import threading

    import numpy as np
    import onnxruntime_genai as og

    from distillm_edge.backends.onnx_batch import OnnxSlotScheduler

    if new_tokens <= late_after:
        raise SystemExit(f"--arrivals needs --new-tokens above {late_after} (B arrives after A's {late_after}th token)")
    a, b = builder.prompt(n, 900), builder.prompt(n // 2, 901)
    engine = genai_engine(folder, 4)
    buffer = engine.create_event_buffer(16)
    requests = {}

    def begin(name, prompt, max_new):
        request = engine.create_request()
        turn = og.TurnOptions(request)
        turn.set_do_sample(False)
        turn.set_max_generated_tokens(max_new)
        turn.set_min_generated_tokens(max_new)
        request.begin_turn(np.asarray(prompt, dtype=np.int32), turn)
        requests[name] = request

    begin("A", a, new_tokens)
    counts, arrived, waited = {"A": 0, "B": 0}, None, None
    while engine.has_pending_requests() or "B" not in requests:
        if counts["A"] == late_after and "B" not in requests:
            begin("B", b, 8)
            arrived, a_at_arrival = time.perf_counter(), counts["A"]
        for event in engine.run(buffer):
            name = next(k for k, r in requests.items() if r is event.request)
            if event.flags.value & og.EngineEventFlags.TOKEN.value:
                counts[name] += 1
                if name == "B" and counts["B"] == 1:
                    waited, a_before_b = time.perf_counter() - arrived, counts["A"] - a_at_arrival
    print(f"  genai Engine: B arrived after {late_after} of A's {new_tokens} tokens; A emitted {a_before_b} more "
          f"before B's first token ({1000 * waited:.0f} ms)", flush=True)

    scheduler = OnnxSlotScheduler(ours, 2, n + new_tokens + 8)
    try:
        stream_a = scheduler.stream(a, new_tokens)
        got_a = [next(stream_a) for _ in range(late_after)]
        result = {}

        def run_b():
            start = time.perf_counter()
            stream_b = scheduler.stream(b, 8)
            next(stream_b)
            result["waited"] = time.perf_counter() - start
            result["a"] = len(got_a) - late_after
            list(stream_b)

        thread = threading.Thread(target=run_b)
        thread.start()
        for token in stream_a:
            got_a.append(token)
        thread.join()
        print(f"  our OnnxSlotScheduler: A emitted {result['a']} more before B's first token "
              f"({1000 * result['waited']:.0f} ms)", flush=True)
    finally:
        scheduler.close()

    for what, attempt in (("a per-request seed (OpenAI 'seed')", lambda t: t.set_seed(4)),):
        request = engine.create_request()
        turn = og.TurnOptions(request)
        try:
            attempt(turn)
            request.begin_turn(np.asarray(a, dtype=np.int32), turn)
            print(f"  genai Engine accepts {what}")
        except RuntimeError as exc:
            print(f"  genai Engine refuses {what}: {exc}")
        request.close()
    config = og.Config(str(folder))
    try:
        config.overlay(json.dumps({"engine": {"dynamic_batching": {"num_blocks": 64}}}))
        og.Engine(og.Model(config))
        print("  genai Engine with dynamic_batching: opened")
    except RuntimeError as exc:
        print(f"  genai Engine with dynamic_batching refuses this export: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="gguf,onnx")
    parser.add_argument("--lengths", default="64,1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="0: physical cores")
    parser.add_argument("--onnx-concat", action="store_true",
                        help="also time our ONNX backend with the KV cache grown by concatenation")
    parser.add_argument("--batch", default="", help="also time K ONNX sequences decoded together (e.g. 1,4,8)")
    parser.add_argument("--arrivals", action="store_true",
                        help="show a late request's wait under genai's Engine and under our ONNX scheduler")
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
            rows += compare_batch(ours, model, folder, PromptBuilder(ours.tokenize), lengths,
                                  [int(k) for k in args.batch.split(",")], args.repeats, args.new_tokens)
        if args.arrivals:
            arrivals(ours, folder, PromptBuilder(ours.tokenize), lengths[0], args.new_tokens)
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
