"""Built-in corpus check: schema, counts per specialty x stage, lengths, tokens, overlap with real sets.

Validates ``distillm_edge/data/builtin/medical_qa.jsonl`` the way ``tests/data/test_builtin.py`` does
(keys, unique ids and questions, labels, 1-4 sentences per answer) and prints counts by specialty and
curriculum stage, answer-length statistics and, with ``--tokens``, SmolLM2 token counts. Each
``--against FILE`` (any file ``data prepare`` reads: medalpaca JSON, MedQuAD JSONL, ...) is scanned for
overlap: questions identical after normalization, and answers sharing a word n-gram (``--ngram``,
several sizes allowed) with any reference response. Exit status 1 when the schema check fails.

Run: ``python benchmarks/corpus_stats.py [--tokens] [--against ../shared/data/medalpaca/medical_meadow_small_train.json]``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import Counter

from distillm_edge.data import DIFFICULTY_STAGES, SPECIALTIES, builtin_corpus_path

WORD = re.compile(r"[a-z0-9]+")
SENTENCE = re.compile(r"[.!?](?:\s|$)")  # the same rule as tests/data/test_builtin.py


def words(text: str) -> list[str]:
    return WORD.findall(text.casefold())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def problems(rows: list[dict]) -> list[str]:
    """Every schema violation, one line each (empty when the corpus is well formed)."""
    out, ids, questions = [], Counter(r.get("id") for r in rows), Counter(r.get("question", "").casefold() for r in rows)
    allowed = set(SPECIALTIES) - {"general"}
    for n, r in enumerate(rows, 1):
        where = f"line {n} ({r.get('id')})"
        if set(r) != {"id", "specialty", "difficulty", "question", "answer"}:
            out.append(f"{where}: keys {sorted(r)}")
            continue
        if ids[r["id"]] > 1 or questions[r["question"].casefold()] > 1:
            out.append(f"{where}: duplicate id or question")
        if r["specialty"] not in allowed or not r["id"].startswith(r["specialty"] + "-"):
            out.append(f"{where}: specialty {r['specialty']!r} (id must be <specialty>-NNN)")
        if r["difficulty"] not in DIFFICULTY_STAGES:
            out.append(f"{where}: difficulty {r['difficulty']!r}")
        if not r["question"].strip().endswith(("?", ".")):
            out.append(f"{where}: question must end with '?' or '.'")
        if not 1 <= len(SENTENCE.findall(r["answer"])) <= 4:
            out.append(f"{where}: answer must have 1-4 sentences")
    return out


def overlap(rows: list[dict], path: str, sizes: list[int]) -> dict:
    """Exact-question matches and answer n-gram hits of ``rows`` against the records of ``path``."""
    from distillm_edge.data.readers import read_input
    from distillm_edge.data.records import Record

    refs = [r for r in read_input(path) if isinstance(r, Record)]
    ref_q = {" ".join(words(f"{r.instruction} {r.input}")) for r in refs} | {" ".join(words(r.input)) for r in refs if r.input}
    report = {"file": path, "reference_records": len(refs),
              "same_question": [r["id"] for r in rows if " ".join(words(r["question"])) in ref_q]}
    for n in sizes:
        index: set[tuple[str, ...]] = set()
        for r in refs:
            index |= ngrams(r.response, n)
        hits = [r["id"] for r in rows if ngrams(r["answer"], n) & index]
        report[f"answers_sharing_{n}gram"] = hits
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", action="store_true", help="count tokens with the student's tokenizer (smollm2-135m-instruct)")
    ap.add_argument("--against", action="append", default=[], help="reference file to check overlap with (repeatable)")
    ap.add_argument("--ngram", type=int, action="append", default=None, help="n-gram size(s) for answer overlap (default 8 and 13)")
    ap.add_argument("--list", action="store_true", help="print the ids behind every overlap count")
    args = ap.parse_args()

    rows = [json.loads(x) for x in builtin_corpus_path().read_text(encoding="utf-8").splitlines() if x.strip()]
    bad = problems(rows)
    for line in bad[:50]:
        print("SCHEMA", line)
    per = Counter((r["specialty"], r["difficulty"]) for r in rows)
    print(f"{len(rows)} records, {len({r['specialty'] for r in rows})} specialties, schema problems: {len(bad)}")
    print(f"{'specialty':24}" + "".join(f"{s:>7}" for s in DIFFICULTY_STAGES) + f"{'total':>7}")
    for sp in sorted({r["specialty"] for r in rows}, key=SPECIALTIES.index):
        print(f"{sp:24}" + "".join(f"{per[sp, s]:7}" for s in DIFFICULTY_STAGES) + f"{sum(per[sp, s] for s in DIFFICULTY_STAGES):7}")
    print(f"{'all':24}" + "".join(f"{sum(v for (_, s), v in per.items() if s == st):7}" for st in DIFFICULTY_STAGES) + f"{len(rows):7}")
    aw, qw = [len(r["answer"].split()) for r in rows], [len(r["question"].split()) for r in rows]
    print(f"answer words: mean {statistics.mean(aw):.1f} median {statistics.median(aw):.0f} min {min(aw)} max {max(aw)}; "
          f"question words: mean {statistics.mean(qw):.1f}; total words {sum(aw) + sum(qw):,}")
    if args.tokens:
        from distillm_edge.data.pipeline import DEFAULT_TOKENIZER, load_student_tokenizer

        tok = load_student_tokenizer(DEFAULT_TOKENIZER)
        q = [len(x) for x in tok([r["question"] for r in rows], add_special_tokens=False)["input_ids"]]
        a = [len(x) for x in tok([r["answer"] for r in rows], add_special_tokens=False)["input_ids"]]
        print(f"{DEFAULT_TOKENIZER} tokens: questions {sum(q):,}, answers {sum(a):,}, total {sum(q) + sum(a):,}; "
              f"per record mean {statistics.mean(x + y for x, y in zip(q, a)):.1f} max {max(x + y for x, y in zip(q, a))}")
    for path in args.against:
        rep = overlap(rows, path, args.ngram or [8, 13])
        counts = {k: (len(v) if isinstance(v, list) else v) for k, v in rep.items()}
        print("overlap", json.dumps(counts))
        if args.list:
            print(json.dumps({k: v for k, v in rep.items() if isinstance(v, list) and v}))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
