"""Benchmark of ``distillm-edge data prepare`` at scale, with planted duplicates and contamination.

Generates a synthetic medical-QA corpus (default 200,000 records in 4 JSONL shards, ~5% with a
context passage, ~1% longer than the token limit) into a temporary folder, planting:
- exact duplicates (copies of earlier records with case, spacing and punctuation changed),
- near duplicates (copies with one word of the answer replaced: true 5-shingle Jaccard ~0.9),
- benchmark contamination (questions of a generated MMLU-style test file, half of them short),
- option leaks (a generic stem such as "Which of the following is true?" + one benchmark item's
  four statement options verbatim, relabelled "(a)".."(d)").
It then runs the real pipeline (``run(PrepareConfig)``, SmolLM2 tokenizer, 1024-token limit) in a
fresh process and prints records/s (wall and per CPU-second, with the load average: the machine
is shared), that process's peak RSS, and recall / false positives per planted kind (near
duplicates also per true Jaccard band) from ``removals.jsonl``.
Side by side, it times the vectorized MinHash signatures against ``datasketch.MinHash`` per
record (the reference they are tested equal to), median of 3 repeats.

Run: ``python benchmarks/data_pipeline.py [--records 200000] [--keep]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

TERMS = (
    "hypertension asthma diabetes anemia sepsis pneumonia migraine epilepsy psoriasis eczema gout arthritis "
    "hepatitis cirrhosis pancreatitis nephropathy thyroiditis lymphoma leukemia melanoma glaucoma otitis "
    "bronchiolitis preeclampsia endometriosis osteoporosis tuberculosis malaria meningitis stroke angina"
).split()
WORDS = (
    "the patient with of and in a to is for on by treatment symptoms diagnosis risk blood pressure heart lung "
    "kidney liver brain skin bone dose therapy chronic acute infection inflammation pain fever cough test "
    "imaging biopsy clinical common rare severe mild early late first line drug may can often usually"
).split()
SYNTH = [f"{a}{b}{c}" for a in "bcdfghklmnprstvz" for b in "aeiou" for c in ("lin", "mab", "tor", "sin", "dal", "rex", "vo", "pam")]
TEMPLATES = ["What are the symptoms of {t} in {s}?", "How is {t} treated when {s} is present?",
             "What causes {t} and {s}?", "Which tests confirm {t} with {s}?", "What is the outlook of {t} after {s}?"]


def sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(SYNTH) if rng.random() < 0.45 else rng.choice(WORDS) for _ in range(n)]
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def base_record(rng: random.Random, i: int) -> dict:
    term = rng.choice(TERMS)
    question = rng.choice(TEMPLATES).format(t=term, s=rng.choice(SYNTH)) + f" (case {i})"
    answer = " ".join(sentence(rng, rng.randint(12, 22)) for _ in range(rng.randint(4, 6))).replace("The", term.capitalize(), 1)
    row = {"id": f"r{i}", "question": question, "answer": answer}
    roll = rng.random()
    if roll < 0.01:
        row["context"] = " ".join(sentence(rng, 20) for _ in range(60))  # ~1,200 words: truncated
    elif roll < 0.05:
        row["context"] = " ".join(sentence(rng, 20) for _ in range(5))
    return row


def mmlu_questions(rng: random.Random, n: int) -> list[str]:
    out = []
    for k in range(n):
        if k % 2:  # long vignette-like question (n-gram matched)
            out.append(f"A {rng.randint(20, 80)}-year-old presents with " + sentence(rng, 18)[:-1] + " and " + rng.choice(TERMS) + "?")
        else:  # short question (matched whole)
            out.append(f"What is {rng.choice(SYNTH)} {rng.choice(SYNTH)}?")
    return out


def generate(folder: Path, n: int, seed: int = 0) -> tuple[dict[str, dict[str, str]], dict[str, float]]:
    """Write the corpus and the benchmark file; return planted id -> its original (or "") per kind,
    and the true shingle Jaccard of each planted near duplicate.

    Shards are read one after the other, so a copy can be read before its original; either one
    being removed counts as finding the pair.
    """
    rng = random.Random(seed)
    bench = mmlu_questions(rng, 200)
    options = [[sentence(rng, 6)[:-1] for _ in range(4)] for _ in bench]  # statement options, 6 words each
    (folder / "bench").mkdir()
    with open(folder / "bench" / "synthetic_val.csv", "w", encoding="utf-8") as fh:
        for q, opts in zip(bench, options):
            fh.write(f'"{q}",' + ",".join(f'"{o}"' for o in opts) + ",A\n")
    planted: dict[str, dict[str, str]] = {"exact": {}, "near": {}, "contaminated": {}, "option_leak": {}}
    jaccards: dict[str, float] = {}
    recent: list[dict] = []
    shards = [open(folder / f"corpus-{k}.jsonl", "w", encoding="utf-8") for k in range(4)]
    try:
        for i in range(n):
            roll = rng.random()
            if recent and roll < 0.02:
                src = rng.choice(recent)
                row = {"id": f"x{i}", "question": src["question"].upper().replace("?", " ?"), "answer": "  " + src["answer"].replace(".", " .")}
                if "context" in src:
                    row["context"] = src["context"]
                planted["exact"][f"corpus-{i % 4}:x{i}"] = src["key"]
            elif recent and roll < 0.04:
                src = rng.choice(recent)
                words = src["answer"].split()
                words[rng.randrange(len(words))] = "zzchanged"
                row = {"id": f"n{i}", "question": src["question"], "answer": " ".join(words)}
                planted["near"][f"corpus-{i % 4}:n{i}"] = src["key"]
                jaccards[f"corpus-{i % 4}:n{i}"] = true_jaccard(src, row)
            elif roll < 0.0405:
                row = {"id": f"c{i}", "question": "Exam practice: " + rng.choice(bench), "answer": sentence(rng, 15)}
                planted["contaminated"][f"corpus-{i % 4}:c{i}"] = ""
            elif roll < 0.041:
                opts = rng.choice(options)
                row = {"id": f"o{i}", "question": "Which of the following is true?\n" + "\n".join(
                    f"({'abcd'[k]}) {o}" for k, o in enumerate(opts)), "answer": sentence(rng, 15)}
                planted["option_leak"][f"corpus-{i % 4}:o{i}"] = ""
            else:
                row = base_record(rng, i)
                if len(recent) < 5000:
                    recent.append({**row, "key": f"corpus-{i % 4}:r{i}"})
                else:
                    recent[rng.randrange(5000)] = {**row, "key": f"corpus-{i % 4}:r{i}"}
            shards[i % 4].write(json.dumps(row) + "\n")
    finally:
        for fh in shards:
            fh.close()
    return planted, jaccards


def true_jaccard(a: dict, b: dict, size: int = 5) -> float:
    """Exact Jaccard of the 5-word shingles near-dedup compares (question + answer words)."""
    from distillm_edge.data.records import match_words

    def shingles(row: dict) -> set[tuple[str, ...]]:
        w = match_words(row["question"]) + match_words(row["answer"])
        return {tuple(w[i : i + size]) for i in range(len(w) - size + 1)}

    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def time_signatures(folder: Path, num_perm: int = 64, sample: int = 5000) -> tuple[float, float]:
    """Records/s of vectorized signatures vs datasketch.MinHash per record (medians of 3)."""
    from datasketch import MinHash

    from distillm_edge.data.dedup import NearDuplicates, shingle_hashes
    from distillm_edge.data.records import match_words

    rows = [json.loads(line) for _, line in zip(range(sample), open(folder / "corpus-0.jsonl", encoding="utf-8"), strict=False)]
    lists = [match_words(r["question"]) + match_words(r["answer"]) for r in rows]
    index = NearDuplicates(num_perm=num_perm)
    fast, slow = [], []
    for _ in range(3):
        t = time.perf_counter()
        for k in range(0, len(lists), 512):
            index.signatures(lists[k : k + 512])
        fast.append(len(lists) / (time.perf_counter() - t))
        t = time.perf_counter()
        for words in lists:
            hashes, _ = shingle_hashes([words], 5)
            m = MinHash(num_perm=num_perm, seed=1, hashfunc=lambda x: x)
            m.update_batch(hashes.tolist())
        slow.append(len(lists) / (time.perf_counter() - t))
    return statistics.median(fast), statistics.median(slow)


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def run_pipeline(folder: str, max_tokens: int, out: dict) -> None:
    """Child process: load the tokenizer, then time the pipeline; its peak RSS is only its own."""
    from distillm_edge.data import PrepareConfig, run
    from distillm_edge.data.pipeline import load_student_tokenizer

    t = time.perf_counter()
    tokenizer = load_student_tokenizer("smollm2-135m-instruct") if max_tokens else None
    out["tokenizer_s"] = time.perf_counter() - t
    out["rss_before_mb"] = peak_rss_mb()
    root = Path(folder)
    cfg = PrepareConfig(inputs=tuple(str(p) for p in sorted(root.glob("corpus-*.jsonl"))), decontaminate=(str(root / "bench"),),
                        out=str(root / "out"), max_tokens=max_tokens, progress=False)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t, cpu = time.perf_counter(), time.process_time()
    stats = run(cfg, tokenizer=tokenizer)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes, reaped by now
    workers_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    out["seconds"], out["cpu_seconds"], out["workers_cpu"] = time.perf_counter() - t, time.process_time() - cpu + workers_cpu, workers_cpu
    out["peak_rss_mb"], out["worker_rss_mb"] = peak_rss_mb(), after.ru_maxrss / 1024
    out["removed"] = stats["removed"]
    out["truncation"] = stats["truncation"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="distillm-data-bench-"))
    try:
        t = time.perf_counter()
        planted, jaccards = generate(folder, args.records)
        size = sum(p.stat().st_size for p in folder.glob("corpus-*.jsonl")) / 2**20
        print(f"generated {args.records:,} records ({size:,.0f} MiB) in {time.perf_counter() - t:.1f} s; planted "
              + ", ".join(f"{k} {len(v):,}" for k, v in planted.items()))
        fast, slow = time_signatures(folder)
        print(f"MinHash signatures: vectorized {fast:,.0f} rec/s vs datasketch.MinHash {slow:,.0f} rec/s ({fast / slow:.1f}x)")

        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager:
            result = manager.dict()
            child = context.Process(target=run_pipeline, args=(str(folder), args.max_tokens, result))
            child.start()
            child.join()
            if child.exitcode != 0:
                raise SystemExit(f"pipeline process failed with exit code {child.exitcode}")
            res = dict(result)
        seconds, cpu_seconds = res["seconds"], res["cpu_seconds"]
        print(f"tokenizer loaded in {res['tokenizer_s']:.1f} s (not timed); pipeline process RSS before the run {res['rss_before_mb']:,.0f} MiB")
        print(f"pipeline: {args.records:,} records in {seconds:.1f} s wall = {args.records / seconds:,.0f} records/s; "
              f"{cpu_seconds:.1f} CPU-s in all ({res['workers_cpu']:.1f} in workers) = {args.records / cpu_seconds:,.0f} records "
              f"per CPU-second; peak RSS {res['peak_rss_mb']:,.0f} MiB (largest worker {res['worker_rss_mb']:,.0f} MiB); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print("removed per stage: " + ", ".join(f"{k} {v:,}" for k, v in res["removed"].items()))
        removed: dict[str, set[str]] = {}
        with open(folder / "out" / "removals.jsonl", encoding="utf-8") as fh:
            for line in fh:
                entry = json.loads(line)
                removed.setdefault(entry["stage"], set()).add(entry.get("id", ""))
        involved: set[str] = set()
        for kind, stage in (("exact", "exact_duplicate"), ("near", "near_duplicate"), ("contaminated", "decontaminated"),
                            ("option_leak", "decontaminated")):
            got = removed.get(stage, set())
            hit = sum(1 for copy, original in planted[kind].items() if copy in got or original in got)
            involved |= set(planted[kind]) | set(planted[kind].values())
            print(f"recall {kind:>12}: {hit:,}/{len(planted[kind]):,} = {hit / max(1, len(planted[kind])):.4f}")
        got = removed.get("near_duplicate", set())
        for lo, hi in ((0.8, 0.85), (0.85, 0.9), (0.9, 1.01)):
            pairs = [(c, o) for c, o in planted["near"].items() if lo <= jaccards[c] < hi]
            hit = sum(1 for c, o in pairs if c in got or o in got)
            print(f"  near recall at true Jaccard [{lo:.2f}, {min(hi, 1):.2f}): {hit:,}/{len(pairs):,} = {hit / max(1, len(pairs)):.4f}")
        unplanted = set().union(*removed.values()) - involved
        trunc = res["truncation"]
        print(f"non-planted records removed (false positives): {len(unplanted):,}; "
              f"truncated contexts {trunc['context_truncated']:,}, responses {trunc['response_truncated']:,}")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
