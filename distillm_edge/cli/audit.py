"""CLI for ``distillm-edge audit verify`` and ``distillm-edge audit export``.

``verify`` recomputes the audit log's hash chain and exits 1, naming each edited, deleted, reordered
or truncated row, when it is broken; ``export`` writes the log as JSON lines or CSV for review.

Run: ``distillm-edge audit verify --audit-db ~/.cache/distillm-edge/audit.sqlite3``;
``distillm-edge audit export --format csv --out audit.csv``.
Test: ``pytest tests/safety/test_cli.py``.
"""

from __future__ import annotations

import typer

from distillm_edge.cli.common import friendly_errors

audit_app = typer.Typer(help="Verify and export the clinician audit log.", no_args_is_help=True)
_DB_HELP = "Audit database. [default: $DISTILLM_EDGE_HOME/audit.sqlite3]"


@audit_app.command("verify")
def verify_command(audit_db: str = typer.Option(None, "--audit-db", help=_DB_HELP)) -> None:
    """Check the hash chain; exit 1 and name the rows when it is broken."""
    from distillm_edge.safety.commands import AuditVerifyConfig, run_audit_verify

    with friendly_errors():
        ok = run_audit_verify(AuditVerifyConfig(audit_db=audit_db))
    if not ok:
        raise typer.Exit(1)


@audit_app.command("export")
def export_command(
    format: str = typer.Option("jsonl", "--format", help="jsonl or csv."),
    out: str = typer.Option(None, "--out", help="Output file (created 0600). [default: stdout]"),
    audit_db: str = typer.Option(None, "--audit-db", help=_DB_HELP),
) -> None:
    """Write every audit row (with its hashes) as JSON lines or CSV."""
    from distillm_edge.safety.commands import AuditExportConfig, run_audit_export

    with friendly_errors():
        run_audit_export(AuditExportConfig(format=format, out=out, audit_db=audit_db))


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
