"""The audit log: every clinician decision in an append-only, hash-chained SQLite (WAL) database.

Each row stores the event (UTC timestamp, clinician, model id and weights hash, generation settings,
prompt, draft, action, final text, red-flag hits, conversation id, reason) and
``hash = SHA-256(prev_hash + "\\n" + canonical JSON of the event)``, where canonical JSON has sorted
keys, no spaces, UTF-8 and no NaN; the first row chains to 64 zeros. The ``head`` table (updated in
the same transaction) and a ``<db>.head`` side file record the last row, so rows cut off the end are
noticed too (someone who can rewrite both can still cut rows off; ``audit verify`` prints the head
hash so it can be recorded elsewhere, which closes that gap). Triggers refuse UPDATE and DELETE on
the log. :meth:`AuditLog.verify` recomputes the chain and names every row that was edited, deleted,
reordered or truncated.

Durability: each append is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction with
``synchronous=FULL``; a crash before the commit leaves the previous, still verifying, log (SQLite
discards uncommitted or torn WAL frames on the next open). The database (and its -wal/-shm files,
which SQLite creates with the database's mode) is owner-only, 0600. Nothing is sent anywhere.

Run: ``distillm-edge audit verify`` / ``distillm-edge audit export --format csv --out log.csv``.
Test: ``pytest tests/safety/test_audit.py``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from distillm_edge.errors import UserError
from distillm_edge.io import ensure_dir, home, sha256_dir, sha256_file

ACTIONS = ("approve", "edit_approve", "reject", "regenerate", "cancel", "acknowledge_red_flag",
           "api_response", "api_blocked", "session_start")
GENESIS = "0" * 64
DB_MODE = 0o600
SCHEMA_VERSION = "1"
# The hashed fields, in the order of the table's columns (the hash itself does not depend on order).
FIELDS = ("ts", "clinician", "model_id", "model_sha256", "settings", "prompt", "draft", "action",
          "final_text", "red_flags", "conversation_id", "reason")
JSON_FIELDS = ("settings", "red_flags")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts TEXT NOT NULL, clinician TEXT NOT NULL, model_id TEXT NOT NULL, model_sha256 TEXT NOT NULL,
    settings TEXT NOT NULL, prompt TEXT NOT NULL, draft TEXT NOT NULL, action TEXT NOT NULL,
    final_text TEXT, red_flags TEXT NOT NULL, conversation_id TEXT, reason TEXT,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: rows cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: rows cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS head_forward_only BEFORE UPDATE ON head WHEN NEW.seq <= OLD.seq
    BEGIN SELECT RAISE(ABORT, 'the audit head only moves forward'); END;
"""


@dataclass(frozen=True)
class AuditEvent:
    clinician: str
    model_id: str
    model_sha256: str
    settings: dict
    prompt: str
    draft: str
    action: str
    final_text: str | None
    red_flags: list[dict]  # Hit.to_dict() of all hits
    conversation_id: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise UserError(f"audit action {self.action!r} is not one of: {', '.join(ACTIONS)}.")
        if not str(self.clinician).strip():
            raise UserError("audit events need a clinician name or ID (--clinician).")


@dataclass
class VerifyReport:
    ok: bool
    rows: int
    problems: list[str] = field(default_factory=list)
    head: str = GENESIS  # the last row's hash: recorded elsewhere, it also proves later truncation

    def to_dict(self) -> dict:
        return {"ok": self.ok, "rows": self.rows, "problems": list(self.problems), "head": self.head}


def canonical_json(obj) -> str:
    """Sorted keys, no whitespace, UTF-8 text, no NaN/Infinity: the same bytes for the same event."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def chain_hash(prev_hash: str, record: dict) -> str:
    """SHA-256 over the previous row's hash and the canonical JSON of this row's hashed fields."""
    payload = {k: record[k] for k in FIELDS}
    return hashlib.sha256(f"{prev_hash}\n{canonical_json(payload)}".encode()).hexdigest()


def default_audit_path() -> Path:
    return home() / "audit.sqlite3"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _check_finite(obj, where: str) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise UserError(f"audit event {where} holds {obj!r}; only finite numbers can be logged.")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")


class AuditLog:
    """One audit database. Thread-safe (one lock per instance); processes serialize on SQLite's lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.head_path = self.path.with_name(self.path.name + ".head")
        self._lock = threading.Lock()
        ensure_dir(self.path.parent)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, DB_MODE))
        os.chmod(self.path, DB_MODE)  # also tightens a database created by someone else's umask
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path}: cannot open the audit database ({exc}); it may be damaged — run "
                            f"'distillm-edge audit verify --audit-db {self.path}' and keep a copy for review.") from None
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.chmod(side, DB_MODE)

    # -- writing ---------------------------------------------------------------------------------
    def append(self, event: AuditEvent) -> int:
        """Append one event (chained to the last row) in one durable transaction; returns its row id."""
        record = {k: getattr(event, k) for k in FIELDS if k != "ts"}
        _check_finite(record, "event")
        record["settings"] = json.loads(canonical_json(dict(event.settings)))
        record["red_flags"] = json.loads(canonical_json(list(event.red_flags)))
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                row = cur.execute("SELECT seq, hash FROM head WHERE id = 1").fetchone()
                seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
                record["ts"] = _utc_now()
                digest = chain_hash(prev, record)
                values = [canonical_json(record[k]) if k in JSON_FIELDS else record[k] for k in FIELDS]
                cur.execute(f"INSERT INTO audit(seq, {', '.join(FIELDS)}, prev_hash, hash) "
                            f"VALUES ({', '.join('?' * (len(FIELDS) + 3))})", (seq, *values, prev, digest))
                cur.execute("INSERT INTO head(id, seq, hash) VALUES (1, ?, ?) "
                            "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash", (seq, digest))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self._write_head_file(seq, digest)
        return seq

    def _write_head_file(self, seq: int, digest: str) -> None:
        """Best-effort copy of the head outside the database; verify accepts it lagging behind."""
        tmp = self.head_path.with_name(f".{self.head_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, DB_MODE)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"seq": seq, "hash": digest}) + "\n")
        os.replace(tmp, self.head_path)

    # -- reading ---------------------------------------------------------------------------------
    def _raw_rows(self) -> list[sqlite3.Row]:
        cur = self._db.cursor()
        cur.row_factory = sqlite3.Row
        return cur.execute(f"SELECT seq, {', '.join(FIELDS)}, prev_hash, hash FROM audit ORDER BY seq").fetchall()

    def rows(self) -> Iterator[dict]:
        """Rows in order, with JSON fields decoded."""
        with self._lock:
            raw = self._raw_rows()
        for r in raw:
            d = dict(r)
            for k in JSON_FIELDS:
                d[k] = json.loads(d[k])
            yield d

    def verify(self) -> VerifyReport:
        """Recompute the chain; every problem names the rows involved."""
        with self._lock:
            try:
                raw = self._raw_rows()
                head = self._db.execute("SELECT seq, hash FROM head WHERE id = 1").fetchone()
            except sqlite3.DatabaseError as exc:
                return VerifyReport(False, 0, [f"{self.path}: the database cannot be read ({exc}): the file was "
                                               "truncated or overwritten outside SQLite."])
        return verify_rows([dict(r) for r in raw], head, self._read_head_file())

    def _read_head_file(self) -> tuple[int, str] | None:
        try:
            data = json.loads(self.head_path.read_text())
            return int(data["seq"]), str(data["hash"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return (-1, "unreadable")

    def export(self, out: Path | str | TextIO, fmt: str = "jsonl") -> int:
        """Write every row (with its hashes) as JSON lines or CSV; a file path is created 0600."""
        if fmt not in ("jsonl", "csv"):
            raise UserError(f"export format {fmt!r} is not supported; use jsonl or csv.")
        rows = list(self.rows())
        buf = io.StringIO()
        if fmt == "jsonl":
            for r in rows:
                buf.write(json.dumps(r, ensure_ascii=False) + "\n")
        else:
            cols = ["seq", *FIELDS, "prev_hash", "hash"]
            writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
            writer.writeheader()
            for r in rows:
                writer.writerow({k: canonical_json(r[k]) if k in JSON_FIELDS else r[k] for k in cols})
        if isinstance(out, (str, Path)):
            out = Path(out)
            ensure_dir(out.parent)
            fd = os.open(out, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, DB_MODE)
            os.chmod(out, DB_MODE)
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(buf.getvalue())
        else:
            out.write(buf.getvalue())
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rows(first: int, last: int) -> str:
    return f"row {first}" if first == last else f"rows {first}-{last}"


def verify_rows(rows: list[dict], head: tuple[int, str] | None, head_file: tuple[int, str] | None) -> VerifyReport:
    """The chain check on plain rows (``seq``, the hashed fields as stored, ``prev_hash``, ``hash``)."""
    problems: list[str] = []
    by_hash = {r["hash"]: r["seq"] for r in rows}
    prev_seq, prev_hash = 0, GENESIS
    for r in rows:
        seq = r["seq"]
        try:
            record = {k: json.loads(r[k]) if k in JSON_FIELDS else r[k] for k in FIELDS}
            content_ok = chain_hash(r["prev_hash"], record) == r["hash"]
        except (ValueError, TypeError):
            content_ok = False
        if not content_ok:
            problems.append(f"row {seq}: edited (its contents no longer match its hash)")
        if r["prev_hash"] != prev_hash:
            if seq != prev_seq + 1:
                problems.append(f"{_rows(prev_seq + 1, seq - 1)}: deleted (row {seq} chains past the gap)")
            elif r["prev_hash"] in by_hash and by_hash[r["prev_hash"]] != seq - 1:
                problems.append(f"row {seq}: reordered (it was written after row {by_hash[r['prev_hash']]}, "
                                f"not after row {prev_seq or 'none (the first row)'})")
            elif r["prev_hash"] == GENESIS:
                problems.append(f"row {seq}: reordered (it was written as the first row)")
            else:
                problems.append(f"row {seq}: the row before it (row {prev_seq or 'none'}) was edited, replaced or "
                                "deleted (the chain link does not match)")
        elif seq != prev_seq + 1:
            problems.append(f"row {seq}: row numbers jump from {prev_seq} to {seq} (renumbered)")
        prev_seq, prev_hash = seq, r["hash"]
    last_seq = rows[-1]["seq"] if rows else 0
    last_hash = rows[-1]["hash"] if rows else GENESIS
    if head is None:
        if rows:
            problems.append("head: the head record is missing (deleted outside the log)")
    elif head[0] > last_seq:
        problems.append(f"{_rows(last_seq + 1, head[0])}: truncated (the head records {head[0]} rows, the log ends at "
                        f"row {last_seq})")
    elif head[0] < last_seq or head[1] != last_hash:
        problems.append(f"row {last_seq}: does not match the head record (row {head[0]}); rows were added or "
                        "replaced outside the log")
    if head_file is not None:
        fseq, fhash = head_file
        if fseq < 0:
            problems.append("head file: unreadable (overwritten outside the log)")
        elif fseq > last_seq:
            problems.append(f"{_rows(last_seq + 1, fseq)}: truncated (the head file records {fseq} rows, the log ends "
                            f"at row {last_seq})")
        elif fseq >= 1 and not any(r["seq"] == fseq and r["hash"] == fhash for r in rows):
            problems.append(f"row {fseq}: does not match the head file (edited, replaced or deleted)")
    return VerifyReport(ok=not problems, rows=len(rows), problems=problems, head=last_hash)


# --- Model identity --------------------------------------------------------------------------
_IDENTITY_CACHE: dict[tuple[str, int, int], str] = {}
_WEIGHT_PATTERNS = ("*.safetensors", "*.gguf", "*.onnx", "*.onnx.data", "*.data", "*.json")


def _weights_key(path: Path) -> tuple[str, int, int]:
    if path.is_file():
        st = path.stat()
        return str(path.resolve()), st.st_mtime_ns, st.st_size
    files = [p for pat in _WEIGHT_PATTERNS for p in path.glob(pat) if p.is_file()]
    stats = [p.stat() for p in files]
    return (str(path.resolve()), max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats))


def model_identity(backend) -> tuple[str, str]:
    """(model id, SHA-256 of the weights): a .gguf file's bytes, or an HF/ONNX directory's weight files.

    Hashed once per process and cached by path, mtime and size. The hash is "" when the backend loaded
    from somewhere that is not a local file or directory (then the id alone identifies it)."""
    info = backend.info
    model_id = f"{info.backend}:{info.model}"
    path = Path(info.path) if info.path else None
    if path is not None and path.is_file() and path.suffix == ".onnx":
        path = path.parent  # ONNX weights live beside the graph (external data)
    if path is None or not path.exists():
        return model_id, ""
    key = _weights_key(path)
    if key not in _IDENTITY_CACHE:
        _IDENTITY_CACHE[key] = sha256_file(path) if path.is_file() else sha256_dir(path, _WEIGHT_PATTERNS)
    return model_id, _IDENTITY_CACHE[key]
