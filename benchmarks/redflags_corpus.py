"""Red-flag rules on the hand-written corpus: precision and recall per rule, overall, per sentence.

Two corpora: ``tests/safety/redflag_corpus.jsonl`` (the development set the default rules were tuned
on; it includes earlier held-out sets, folded in after they were scored) and
``tests/safety/redflag_holdout.jsonl`` (written after the last tuning round, scored once, never tuned
against), so the held-out numbers are the honest estimate. Also times the check (median of repeats) against the plain
regex search without context, as a ratio.

Run: ``python benchmarks/redflags_corpus.py [--rules FILE] [--errors]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from distillm_edge.safety.evaluate import format_report, load_corpus, score
from distillm_edge.safety.redflags import load_rules

HERE = Path(__file__).resolve().parents[1] / "tests" / "safety"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", default=None, help="rules YAML (default: the packaged rules)")
    ap.add_argument("--errors", action="store_true", help="list every text where the rules disagree with the labels")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rules = load_rules(args.rules)
    print(f"rules: {rules.path} ({len(rules.rules)} rules, sha256 {rules.sha256[:12]})")
    for name in ("redflag_corpus.jsonl", "redflag_holdout.jsonl"):
        rows = load_corpus(HERE / name)
        report = score(rules, rows)
        print()
        print(format_report(report, name))
        if args.errors:
            for e in report.errors:
                print(f"  {e['id']}: missed={e['missed']} extra={e['extra']} :: {e['text']}")
    texts = [r["text"] for r in load_corpus(HERE / "redflag_corpus.jsonl")]
    full, plain = [], []
    patterns = [p for r in rules.rules for p in r.patterns]
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for t in texts:
            rules.check(t)
        full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for t in texts:
            for p in patterns:
                p.search(t)
        plain.append(time.perf_counter() - t0)
    f, p = statistics.median(full), statistics.median(plain)
    print(f"\ncheck: {1e3 * f / len(texts):.3f} ms/text with context vs {1e3 * p / len(texts):.3f} ms/text plain "
          f"pattern search (ratio {f / p:.1f}x, median of {args.repeats})")


if __name__ == "__main__":
    main()
