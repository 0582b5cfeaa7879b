"""The clinician gate: which red flags a question and its draft answer raise, and whether one-key
approval is blocked (any active red flag needs an explicit, logged acknowledgment).

Chat and serve call :func:`assess` and only present its decision.

Test: ``pytest tests/safety/test_gate.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from distillm_edge.safety.redflags import Hit, RuleSet, active


@dataclass(frozen=True)
class Assessment:
    hits: tuple[Hit, ...]  # all hits from the question and the draft, suppressed ones included
    red_flags: tuple[Hit, ...]  # the active ones
    requires_ack: bool  # True when any red flag is active: one-key approval is blocked

    def to_dict(self) -> dict:
        return {"hits": [h.to_dict() for h in self.hits], "red_flags": [h.to_dict() for h in self.red_flags],
                "requires_ack": self.requires_ack}


def assess(rules: RuleSet, question: str, draft: str = "") -> Assessment:
    """Check the question and the draft; any active hit in either requires an acknowledgment."""
    hits = tuple(rules.check(question or "", "question") + rules.check(draft or "", "draft"))
    flags = tuple(active(hits))
    return Assessment(hits=hits, red_flags=flags, requires_ack=bool(flags))
