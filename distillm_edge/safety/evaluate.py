"""Score red-flag rules on a labelled corpus: precision and recall per rule, overall, and per sentence.

A corpus is JSON lines ``{"id", "text", "expect": [rule ids], "kind"}``; ``expect`` lists the rules
that must fire (active, not suppressed) on the text, and an empty list means nothing may fire.
Two views are reported:

- *rule level* (micro-averaged over (text, rule) pairs): a fired rule that is not expected is a false
  positive, an expected rule that does not fire a false negative;
- *sentence level*: does the gate raise any red flag on a text that should raise one (what blocks
  one-key approval)?

Run: ``python benchmarks/redflags_corpus.py``. Test: ``pytest tests/safety/test_corpus.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from distillm_edge.errors import UserError
from distillm_edge.safety.redflags import RuleSet


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass
class CorpusReport:
    rules: dict[str, Score] = field(default_factory=dict)
    overall: Score = field(default_factory=Score)  # rule level, micro-averaged
    sentences: Score = field(default_factory=Score)  # any red flag vs none
    errors: list[dict] = field(default_factory=list)  # {"id", "text", "missed", "extra"}
    counts: Counter = field(default_factory=Counter)  # texts per kind


def load_corpus(path: str | Path) -> list[dict]:
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n}: not valid JSON ({exc.msg}).") from None
        if not isinstance(row.get("text"), str) or not isinstance(row.get("expect"), list):
            raise UserError(f'{path}:{n}: each line needs "text" (string) and "expect" (list of rule ids).')
        rows.append(row)
    return rows


def score(rules: RuleSet, rows: Iterable[dict]) -> CorpusReport:
    report = CorpusReport(rules={r.id: Score() for r in rules.rules})
    known = set(report.rules)
    for row in rows:
        expect = set(row["expect"])
        unknown = expect - known
        if unknown:
            raise UserError(f"corpus item {row.get('id')}: unknown rule id(s) {sorted(unknown)}.")
        fired = {h.rule_id for h in rules.check(row["text"]) if h.suppressed is None}
        report.counts[row.get("kind", "")] += 1
        for rid in fired | expect:
            s = report.rules[rid]
            if rid in fired and rid in expect:
                s.tp += 1
                report.overall.tp += 1
            elif rid in fired:
                s.fp += 1
                report.overall.fp += 1
            else:
                s.fn += 1
                report.overall.fn += 1
        if expect and fired:
            report.sentences.tp += 1
        elif fired:
            report.sentences.fp += 1
        elif expect:
            report.sentences.fn += 1
        if fired != expect:
            report.errors.append({"id": row.get("id"), "text": row["text"], "missed": sorted(expect - fired),
                                  "extra": sorted(fired - expect)})
    return report


def format_report(report: CorpusReport, title: str) -> str:
    lines = [f"{title}: {sum(report.counts.values())} texts ({', '.join(f'{k} {v}' for k, v in sorted(report.counts.items()))})",
             f"{'rule':<36} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>10} {'recall':>8}"]
    for rid, s in report.rules.items():
        lines.append(f"{rid:<36} {s.tp:>4} {s.fp:>4} {s.fn:>4} {s.precision:>10.3f} {s.recall:>8.3f}")
    o, s = report.overall, report.sentences
    lines.append(f"{'overall (rule level, micro)':<36} {o.tp:>4} {o.fp:>4} {o.fn:>4} {o.precision:>10.3f} {o.recall:>8.3f}")
    lines.append(f"{'sentence level (any red flag)':<36} {s.tp:>4} {s.fp:>4} {s.fn:>4} {s.precision:>10.3f} {s.recall:>8.3f}")
    return "\n".join(lines)
