"""The audit log: chained hashes, tamper detection (edit, delete, reorder, truncate), crash safety
(SIGKILL mid-append, an uncommitted transaction, a torn WAL tail), 0600 permissions, exports.

Tampering is simulated the way an attacker would do it: a raw sqlite3 connection that drops the
append-only triggers first.

Run: ``pytest tests/safety/test_audit.py -q``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import pytest

from distillm_edge.safety.audit import (
    ACTIONS,
    GENESIS,
    AuditEvent,
    AuditLog,
    canonical_json,
    chain_hash,
    default_audit_path,
    model_identity,
)
from distillm_edge.safety.redflags import load_rules

_HITS = [h.to_dict() for h in load_rules().check("denies chest pain radiating to the arm")]


def _event(i: int = 0, **kw) -> AuditEvent:
    hits = _HITS if i % 2 else []
    base = dict(clinician="Dr Ada", model_id="gguf:smollm2", model_sha256="ab" * 32,
                settings={"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 64, "seed": i},
                prompt=f"question {i} — ünïcode", draft=f"draft {i}", action="approve", final_text=f"final {i}",
                red_flags=hits, conversation_id="c1")
    base.update(kw)
    return AuditEvent(**base)


def _filled(tmp_path, n=6):
    log = AuditLog(tmp_path / "audit.sqlite3")
    for i in range(n):
        log.append(_event(i))
    return log


def _tamper(log, *sql):
    db = sqlite3.connect(log.path)
    db.execute("DROP TRIGGER IF EXISTS audit_no_update")
    db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    db.execute("DROP TRIGGER IF EXISTS head_forward_only")
    for stmt in sql:
        db.execute(stmt)
    db.commit()
    db.close()


def test_chain_is_recomputable_and_verifies(tmp_path):
    log = _filled(tmp_path)
    rows = list(log.rows())
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["prev_hash"] == GENESIS
    for prev, row in zip([None, *rows], rows):
        assert row["prev_hash"] == (prev["hash"] if prev else GENESIS)
        assert row["hash"] == chain_hash(row["prev_hash"], row)
    assert rows[1]["red_flags"][0]["suppressed"] == "negated"
    report = log.verify()
    assert report.ok and report.rows == 6 and report.problems == [] and report.head == rows[-1]["hash"]


def test_canonical_json_is_stable():
    assert canonical_json({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_bad_event_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not one of"):
        _event(action="approved")
    with pytest.raises(ValueError, match="clinician"):
        _event(clinician=" ")
    log = AuditLog(tmp_path / "a.sqlite3")
    with pytest.raises(ValueError, match="finite"):
        log.append(_event(settings={"temperature": float("inf")}))
    assert log.verify().ok and log.verify().rows == 0
    assert set(ACTIONS) >= {"approve", "acknowledge_red_flag", "api_blocked"}


def test_triggers_refuse_update_and_delete(tmp_path):
    log = _filled(tmp_path, 2)
    db = sqlite3.connect(log.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET prompt = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit WHERE seq = 2")
    db.close()
    assert log.verify().ok


def test_edit_is_named(tmp_path):
    log = _filled(tmp_path)
    _tamper(log, "UPDATE audit SET final_text = 'something else' WHERE seq = 3")
    report = log.verify()
    assert not report.ok and report.problems == ["row 3: edited (its contents no longer match its hash)"]


def test_edit_with_rehash_is_named_by_the_next_row(tmp_path):
    log = _filled(tmp_path)
    row = next(r for r in log.rows() if r["seq"] == 3)
    row["action"] = "reject"
    new = chain_hash(row["prev_hash"], row)
    _tamper(log, f"UPDATE audit SET action = 'reject', hash = '{new}' WHERE seq = 3")
    problems = log.verify().problems
    assert problems == ["row 4: the row before it (row 3) was edited, replaced or deleted (the chain link does not match)"]


def test_delete_is_named(tmp_path):
    log = _filled(tmp_path)
    _tamper(log, "DELETE FROM audit WHERE seq IN (3, 4)")
    assert log.verify().problems == ["rows 3-4: deleted (row 5 chains past the gap)"]


def test_reorder_is_named(tmp_path):
    log = _filled(tmp_path)
    _tamper(log, "UPDATE audit SET seq = -3 WHERE seq = 3", "UPDATE audit SET seq = 3 WHERE seq = 4",
            "UPDATE audit SET seq = 4 WHERE seq = -3")
    problems = log.verify().problems
    assert any(p.startswith("row 3: reordered") for p in problems), problems
    assert any(p.startswith("row 4: reordered") for p in problems), problems


def test_truncation_of_trailing_rows_is_named(tmp_path):
    log = _filled(tmp_path)
    _tamper(log, "DELETE FROM audit WHERE seq >= 5")
    assert log.verify().problems[0] == "rows 5-6: truncated (the head records 6 rows, the log ends at row 4)"
    # An attacker who also rewinds the head table is still caught by the head file beside the database.
    last = next(r for r in log.rows() if r["seq"] == 4)["hash"]
    _tamper(log, f"UPDATE head SET seq = 4, hash = '{last}'")
    assert log.verify().problems == ["rows 5-6: truncated (the head file records 6 rows, the log ends at row 4)"]


def test_truncated_file_is_reported_not_crashed(tmp_path):
    log = _filled(tmp_path, 50)
    log.close()
    db = sqlite3.connect(tmp_path / "audit.sqlite3")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    path = tmp_path / "audit.sqlite3"
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    try:
        report = AuditLog(path).verify()
    except ValueError as exc:  # UserError: cannot even open it — also a clear refusal
        assert "damaged" in str(exc)
    else:
        assert not report.ok and report.problems


def test_permissions_are_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        log = _filled(tmp_path, 2)
        out = tmp_path / "export.csv"
        log.export(out, "csv")
    finally:
        os.umask(old)
    for name in ("audit.sqlite3", "audit.sqlite3-wal", "audit.sqlite3-shm", "audit.sqlite3.head", "export.csv"):
        p = tmp_path / name
        assert p.exists(), name
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, (name, oct(p.stat().st_mode))


def test_existing_loose_file_is_tightened(tmp_path):
    p = tmp_path / "a.sqlite3"
    p.touch(mode=0o644)
    os.chmod(p, 0o644)
    AuditLog(p).close()
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_export_formats_round_trip(tmp_path):
    log = _filled(tmp_path, 3)
    buf = io.StringIO()
    assert log.export(buf, "jsonl") == 3
    rows = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [r["seq"] for r in rows] == [1, 2, 3] and rows[0]["settings"]["top_p"] == 0.95
    assert rows[1]["prompt"] == "question 1 — ünïcode"
    buf = io.StringIO()
    log.export(buf, "csv")
    table = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert len(table) == 3 and json.loads(table[1]["red_flags"])[0]["rule_id"] == "cardiac.chest_pain_radiation"
    assert table[2]["hash"] == rows[2]["hash"]
    with pytest.raises(ValueError, match="jsonl or csv"):
        log.export(buf, "xml")


def test_threads_append_without_breaking_the_chain(tmp_path):
    log = AuditLog(tmp_path / "a.sqlite3")
    threads = [threading.Thread(target=lambda k=k: [log.append(_event(k * 10 + i)) for i in range(10)])
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = log.verify()
    assert report.ok and report.rows == 40


def test_default_path_is_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLM_EDGE_HOME", str(tmp_path))
    assert default_audit_path() == tmp_path / "audit.sqlite3"


def test_model_identity_hashes_file_once(tmp_path):
    from distillm_edge.backends.base import BackendInfo
    from distillm_edge.io import sha256_file

    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"x" * 1000)

    class Fake:
        info = BackendInfo(backend="gguf", model="m", path=str(weights))

    mid, digest = model_identity(Fake())
    assert mid == "gguf:m" and digest == sha256_file(weights)
    weights.write_bytes(b"y" * 1001)  # new size -> new cache key -> rehashed
    assert model_identity(Fake())[1] == sha256_file(weights)

    class Remote:
        info = BackendInfo(backend="torch", model="org/name", path="org/name")

    assert model_identity(Remote()) == ("torch:org/name", "")


# --- Crash safety --------------------------------------------------------------------------------
_CHILD = r"""
import sys, time
from distillm_edge.safety.audit import AuditLog, AuditEvent
log = AuditLog(sys.argv[1])
ev = AuditEvent("Dr Crash", "m", "0" * 64, {"t": 1}, "p" * 5000, "d" * 5000, "approve", "f", [])
mode = sys.argv[2]
if mode == "loop":
    print("ready", flush=True)
    while True:
        log.append(ev)
else:  # hold an uncommitted transaction with a row written into it, then wait to be killed
    cur = log._db.cursor()
    cur.execute("BEGIN IMMEDIATE")
    cur.execute("INSERT INTO audit(seq, ts, clinician, model_id, model_sha256, settings, prompt, draft, action, "
                "final_text, red_flags, conversation_id, reason, prev_hash, hash) VALUES (999, 't', 'x', 'm', "
                "'h', '{}', 'p', 'd', 'approve', NULL, '[]', NULL, NULL, 'bad', 'bad')")
    print("ready", flush=True)
    time.sleep(60)
"""


def _child(path, mode):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), mode], stdout=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"ready"
    return proc


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.5])
def test_sigkill_mid_append_leaves_a_verifying_log(tmp_path, delay):
    path = tmp_path / "audit.sqlite3"
    _filled(tmp_path, 3).close()
    proc = _child(path, "loop")
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log = AuditLog(path)
    report = log.verify()
    assert report.ok, report.problems
    names = [r["clinician"] for r in log.rows()]
    assert names[:3] == ["Dr Ada"] * 3 and set(names[3:]) <= {"Dr Crash"}
    log.append(_event(99))  # and the log keeps growing after the crash
    assert log.verify().ok


def test_sigkill_with_uncommitted_transaction_leaves_previous_log(tmp_path):
    path = tmp_path / "audit.sqlite3"
    _filled(tmp_path, 3).close()
    proc = _child(path, "hold")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log = AuditLog(path)
    report = log.verify()
    assert report.ok and report.rows == 3, report.problems
    assert log.append(_event(5)) == 4


def test_torn_wal_tail_is_ignored(tmp_path):
    log = _filled(tmp_path, 3)
    wal = tmp_path / "audit.sqlite3-wal"
    log.close()
    # A torn write: half a frame of garbage after the last committed frame.
    with open(wal, "ab") as fh:
        fh.write(os.urandom(2048))
    log = AuditLog(tmp_path / "audit.sqlite3")
    report = log.verify()
    assert report.ok and report.rows == 3, report.problems


_WRITER = r"""
import sys
from distillm_edge.safety.audit import AuditLog, AuditEvent
log = AuditLog(sys.argv[1])
for i in range(int(sys.argv[3])):
    log.append(AuditEvent(sys.argv[2], "m", "0" * 64, {"i": i}, "p", "d", "approve", "f", []))
"""


def test_two_processes_appending_keep_one_chain(tmp_path):
    # chat and serve share the default audit database: their appends must interleave into one chain.
    path = tmp_path / "audit.sqlite3"
    AuditLog(path).close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, "25"], env=env)
             for name in ("chat", "serve")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    log = AuditLog(path)
    report = log.verify()
    assert report.ok and report.rows == 50, report.problems
    assert sorted(r["clinician"] for r in log.rows()) == ["chat"] * 25 + ["serve"] * 25


_EDITABLE = ("ts", "clinician", "model_id", "model_sha256", "settings", "prompt", "draft", "action", "final_text",
             "red_flags", "conversation_id", "reason")


def test_any_single_field_edit_names_its_row():
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    @hypothesis.settings(max_examples=12, deadline=None)
    @hypothesis.given(row=st.integers(1, 4), field=st.sampled_from(_EDITABLE), value=st.text(min_size=1, max_size=20))
    def check(row, field, value):
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as d:
            log = _filled(Path(d), 4)
            old = next(r for r in log.rows() if r["seq"] == row)
            new = canonical_json(value) if field in ("settings", "red_flags") else value
            stored = canonical_json(old[field]) if field in ("settings", "red_flags") else old[field]
            hypothesis.assume(new != stored)
            db = sqlite3.connect(log.path)
            db.execute("DROP TRIGGER audit_no_update")
            db.execute(f"UPDATE audit SET {field} = ? WHERE seq = ?", (new, row))
            db.commit()
            db.close()
            assert log.verify().problems == [f"row {row}: edited (its contents no longer match its hash)"]
            log.close()

    check()
