"""The ``redflags`` and ``audit`` verbs: frozen configs and one ``run_*`` function each.

- ``redflags check``: read one text per line (plain text, or JSON lines with a ``text`` field), print
  one JSON line per input with all its hits (rule id, span, matched text, suppression reason);
- ``audit verify``: recompute the hash chain; exit status 1 and one line per broken row when not ok;
- ``audit export``: write the log as JSON lines or CSV (0600 file, or stdout).

Run: ``distillm-edge redflags check notes.txt`` / ``distillm-edge audit verify``.
Test: ``pytest tests/safety/test_cli.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from distillm_edge.errors import UserError
from distillm_edge.safety.audit import AuditLog, default_audit_path
from distillm_edge.safety.redflags import load_rules


@dataclass(frozen=True)
class RedflagsCheckConfig:
    input: str = "-"  # a file, or "-" for stdin
    rules: str | None = None  # None: the packaged default rules
    only_active: bool = False  # print only active hits (suppressed ones are dropped)


@dataclass(frozen=True)
class AuditVerifyConfig:
    audit_db: str | None = None  # None: $DISTILLM_EDGE_HOME/audit.sqlite3


@dataclass(frozen=True)
class AuditExportConfig:
    format: str = "jsonl"
    out: str | None = None  # None: stdout
    audit_db: str | None = None

    def __post_init__(self) -> None:
        if self.format not in ("jsonl", "csv"):
            raise UserError(f"--format {self.format!r} is not supported; use jsonl or csv.")


def read_texts(lines: TextIO, name: str) -> Iterator[tuple[int, str, dict]]:
    """(line number, text, the JSON object or {}) per non-empty line; JSON lines need a string ``text``."""
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stripped = line.lstrip()
        if stripped.startswith("{"):
            try:
                obj = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise UserError(f"{name}:{n}: starts with '{{' but is not valid JSON ({exc.msg}); write one JSON "
                                "object per line with a \"text\" field, or plain text.") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise UserError(f"{name}:{n}: a JSON line needs a string \"text\" field, e.g. "
                                '{"text": "crushing chest pain"}.')
            yield n, obj["text"], obj
        else:
            yield n, line, {}


def run_redflags_check(cfg: RedflagsCheckConfig, out: TextIO | None = None) -> int:
    """Print one JSON line per input text; returns the number of inputs with an active red flag."""
    out = out or sys.stdout
    rules = load_rules(cfg.rules)
    flagged = 0
    if cfg.input == "-":
        stream, name, close = sys.stdin, "<stdin>", False
    else:
        path = Path(cfg.input)
        if not path.is_file():
            raise UserError(f"{path}: input file not found; pass a text or JSONL file, or '-' for stdin.")
        stream, name, close = open(path, encoding="utf-8"), str(path), True
    try:
        for n, text, obj in read_texts(stream, name):
            hits = rules.check(text)
            if cfg.only_active:
                hits = [h for h in hits if h.suppressed is None]
            active = [h for h in hits if h.suppressed is None]
            flagged += bool(active)
            record = {"line": n, **({"id": obj["id"]} if "id" in obj else {}), "text": text,
                      "red_flag": bool(active), "active": sorted({h.rule_id for h in active}),
                      "hits": [{"rule_id": h.rule_id, "severity": h.severity, "start": h.start, "end": h.end,
                                "matched": h.matched, "suppressed": h.suppressed} for h in hits]}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        if close:
            stream.close()
    return flagged


def _open_existing(audit_db: str | None) -> AuditLog:
    path = Path(audit_db).expanduser() if audit_db else default_audit_path()
    if not path.is_file():
        raise UserError(f"{path}: no audit database there; pass --audit-db PATH (chat and serve write "
                        f"{default_audit_path()} by default).")
    return AuditLog(path)


def run_audit_verify(cfg: AuditVerifyConfig, out: TextIO | None = None) -> bool:
    """Print the verdict (and every problem); returns whether the log verifies."""
    out = out or sys.stdout
    with _open_existing(cfg.audit_db) as log:
        report = log.verify()
        if report.ok:
            out.write(f"ok: {log.path}: {report.rows} rows, the hash chain verifies; head {report.head}\n")
        else:
            out.write(f"BROKEN: {log.path}: {report.rows} rows, {len(report.problems)} problem(s)\n")
            for p in report.problems:
                out.write(f"  {p}\n")
    return report.ok


def run_audit_export(cfg: AuditExportConfig, out: TextIO | None = None) -> int:
    """Write the log; returns the number of rows written."""
    with _open_existing(cfg.audit_db) as log:
        n = log.export(Path(cfg.out) if cfg.out else (out or sys.stdout), cfg.format)
    if cfg.out:
        print(f"wrote {n} rows to {cfg.out} ({cfg.format}, mode 0600)", file=sys.stderr)
    return n
