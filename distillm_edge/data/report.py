"""What the pipeline did, for ``stats.json``, ``DATA_CARD.md`` and ``removals.jsonl``.

Every stage that drops a record calls :meth:`Report.remove` (stage, reason, and what it matched:
the kept duplicate, the benchmark item); every malformed input item goes through
:meth:`Report.bad`. Each removal is written as one line of ``removals.jsonl`` as it happens
(so the full list never sits in memory) and counted per stage and source; ``stats.json`` keeps
the counts and the first examples. Nothing is dropped without a line here.

Test: ``pytest tests/data/test_pipeline.py``.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO, Any

from distillm_edge.data.records import BadRecord, Record
from distillm_edge.errors import UserError
from distillm_edge.io import FILE_MODE

STAGES = ("malformed", "empty_or_short", "exact_duplicate", "decontaminated", "near_duplicate", "too_long")
LIST_LIMIT = 1000  # malformed items / decontaminated ids listed in stats.json (all are in removals.jsonl)
EXAMPLES = 20


class Report:
    """Counters and removal log of one ``data prepare`` run."""

    def __init__(self, removals: Path | None = None, strict: bool = False):
        self.strict = strict
        self.read: Counter[str] = Counter()
        self.read_files: Counter[str] = Counter()
        self.removed: Counter[str] = Counter({s: 0 for s in STAGES})
        self.removed_per_source: dict[str, Counter[str]] = defaultdict(Counter)
        self.malformed: list[str] = []
        self.examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.decontaminated: list[dict[str, Any]] = []
        self.near_clusters: Counter[str] = Counter()  # kept id -> number of near duplicates removed
        self.extra: dict[str, Any] = {}
        self._log: IO[str] | None = None
        if removals is not None:
            self._log = open(removals, "w", encoding="utf-8")
            os.chmod(removals, FILE_MODE)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def bad(self, bad: BadRecord, source: str = "") -> None:
        """Count and list a malformed item, or stop the run in strict mode."""
        if self.strict:
            raise UserError(f"{bad} (stopped by --strict; fix the item or drop --strict to skip and count it).")
        self.removed["malformed"] += 1
        if source:
            self.removed_per_source["malformed"][source] += 1
        if len(self.malformed) < LIST_LIMIT:
            self.malformed.append(str(bad))
        self._write({"stage": "malformed", "where": bad.where, "reason": bad.reason})

    def remove(self, record: Record, stage: str, reason: str, matched: str = "") -> None:
        """Log one dropped record (``matched``: the kept duplicate or benchmark item it matched)."""
        self.removed[stage] += 1
        self.removed_per_source[stage][record.source] += 1
        entry = {"stage": stage, "id": record.id, "source": record.source, "reason": reason}
        if matched:
            entry["matched"] = matched
        if len(self.examples[stage]) < EXAMPLES:
            self.examples[stage].append(entry)
        if stage == "decontaminated" and len(self.decontaminated) < LIST_LIMIT:
            self.decontaminated.append(entry)
        if stage == "near_duplicate":
            self.near_clusters[matched] += 1
        self._write(entry)

    def _write(self, entry: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def summary(self) -> dict[str, Any]:
        """The JSON-serializable part of ``stats.json`` this report owns."""
        largest = self.near_clusters.most_common(EXAMPLES)
        return {
            "read": {"total": sum(self.read.values()), "per_source": dict(self.read), "per_file": dict(self.read_files)},
            "removed": dict(self.removed),
            "removed_per_source": {stage: dict(c) for stage, c in self.removed_per_source.items()},
            "malformed": {
                "count": self.removed["malformed"],
                "items": self.malformed,
                "listed": f"first {LIST_LIMIT} (all in removals.jsonl)" if self.removed["malformed"] > LIST_LIMIT else "all",
            },
            "near_duplicate_clusters": {
                "clusters": len(self.near_clusters),
                "records_removed": self.removed["near_duplicate"],
                "largest": [{"kept": kept, "removed": n} for kept, n in largest],
            },
            "decontaminated": {
                "count": self.removed["decontaminated"],
                "items": self.decontaminated,
            },
            "examples": dict(self.examples),
            **self.extra,
        }
