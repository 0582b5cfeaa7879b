"""CLI: ``redflags check``, ``audit verify`` and ``audit export`` through Typer's CliRunner.

Run: ``pytest tests/safety/test_safety_cli.py -q``.
"""

from __future__ import annotations

import json
import sqlite3
import stat

import pytest
import typer
from typer.testing import CliRunner

from distillm_edge.cli import audit as audit_cli
from distillm_edge.cli import redflags as redflags_cli
from distillm_edge.safety.audit import AuditEvent, AuditLog

runner = CliRunner()


def _text(result) -> str:
    """The output with Rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    redflags_cli.register(app)
    audit_cli.register(app)
    return app


def test_root_app_registers_the_verbs():
    from distillm_edge.cli import app as root

    result = runner.invoke(root, ["--help"])
    assert result.exit_code == 0
    assert "redflags" in result.output and "audit" in result.output and "review" in result.output


def test_redflags_check_plain_and_jsonl(app, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text('Denies chest pain but has slurred speech\n\n{"id": "x1", "text": "My mother had a stroke"}\n'
                   "How do I store insulin?\n")
    result = runner.invoke(app, ["redflags", "check", str(src)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [r["line"] for r in lines] == [1, 3, 4]
    assert lines[0]["active"] == ["neuro.stroke_signs"] and lines[0]["hits"][0]["matched"] == "slurred speech"
    assert lines[1]["id"] == "x1" and not lines[1]["red_flag"]
    assert lines[1]["hits"] == [{"rule_id": "neuro.stroke_signs", "severity": "emergency", "start": 16, "end": 22,
                                 "matched": "stroke", "suppressed": "other_person"}]
    assert lines[2]["hits"] == []


def test_redflags_check_stdin_and_only_active(app):
    result = runner.invoke(app, ["redflags", "check", "--only-active", "-"], input="No history of stroke\n")
    assert result.exit_code == 0 and json.loads(result.output)["hits"] == []


def test_redflags_check_custom_rules_and_errors(app, tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text("extends: default\nrules:\n- id: local.x\n  title: X\n  severity: urgent\n  advice: A\n"
                     "  patterns: ['purple elephant']\n")
    result = runner.invoke(app, ["redflags", "check", "--rules", str(rules), "-"], input="a purple elephant\n")
    assert json.loads(result.output)["active"] == ["local.x"]
    rules.write_text("rules:\n- id: local.x\n  title: X\n  severity: severe\n  advice: A\n  patterns: ['p']\n")
    result = runner.invoke(app, ["redflags", "check", "--rules", str(rules), "-"], input="x\n")
    assert result.exit_code == 2 and "severity" in _text(result) and "emergency, urgent" in _text(result)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": "chest pain"}\n')
    result = runner.invoke(app, ["redflags", "check", str(bad)])
    assert result.exit_code == 2 and "bad.jsonl:1" in _text(result) and '"text"' in _text(result)


def _log(tmp_path, n=4):
    path = tmp_path / "audit.sqlite3"
    log = AuditLog(path)
    for i in range(n):
        log.append(AuditEvent("Dr B", "gguf:m", "0" * 64, {"temperature": 0.0}, f"q{i}", "d", "approve", "f", []))
    log.close()
    return path


def test_audit_verify_ok_and_broken(app, tmp_path):
    path = _log(tmp_path)
    result = runner.invoke(app, ["audit", "verify", "--audit-db", str(path)])
    assert result.exit_code == 0 and "4 rows, the hash chain verifies" in result.output
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET prompt = 'changed' WHERE seq = 2")
    db.commit()
    db.close()
    result = runner.invoke(app, ["audit", "verify", "--audit-db", str(path)])
    assert result.exit_code == 1 and "BROKEN" in result.output and "row 2: edited" in result.output


def test_audit_verify_missing_db(app, tmp_path):
    result = runner.invoke(app, ["audit", "verify", "--audit-db", str(tmp_path / "none.sqlite3")])
    assert result.exit_code == 2 and "--audit-db" in _text(result)
    assert not (tmp_path / "none.sqlite3").exists()


def test_audit_export(app, tmp_path):
    path = _log(tmp_path, 2)
    result = runner.invoke(app, ["audit", "export", "--audit-db", str(path)])
    assert result.exit_code == 0 and [json.loads(x)["seq"] for x in result.output.splitlines()] == [1, 2]
    out = tmp_path / "x.csv"
    result = runner.invoke(app, ["audit", "export", "--format", "csv", "--out", str(out), "--audit-db", str(path)])
    assert result.exit_code == 0 and out.read_text().splitlines()[0].startswith("seq,ts,clinician")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    result = runner.invoke(app, ["audit", "export", "--format", "xml", "--audit-db", str(path)])
    assert result.exit_code == 2 and "jsonl or csv" in _text(result)
