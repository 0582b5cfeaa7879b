"""The one safety layer shared by ``chat`` and ``serve``: red-flag rules, the clinician gate, the audit log.

- ``redflags.py``: the emergency rules (a readable YAML file, validated on load) and a NegEx-style
  checker that reports every match with whether negation, history or another person suppressed it;
- ``gate.py``: :func:`assess` a question and a draft answer -> which red flags block one-key approval;
- ``audit.py``: the hash-chained, append-only SQLite (WAL) log of every clinician decision.

The UI and the HTTP layer only present what this package decides.

Test: ``pytest tests/safety``.
"""

from __future__ import annotations

from distillm_edge.safety.gate import Assessment, assess
from distillm_edge.safety.redflags import Hit, RuleSet, active, load_rules

__all__ = ["Assessment", "Hit", "RuleSet", "active", "assess", "load_rules"]
