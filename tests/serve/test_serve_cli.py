"""`distillm-edge serve` CLI: options reach the config, and unsafe binds fail before loading a model.

Run: ``pytest tests/serve/test_serve_cli.py`` (seconds).
"""

from __future__ import annotations

from typer.testing import CliRunner

from distillm_edge.cli import app


def test_serve_off_loopback_without_key_is_refused(monkeypatch):
    monkeypatch.delenv("DISTILLM_EDGE_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "requires an API key" in result.output and "--api-key" in result.output


def test_serve_passes_a_frozen_config_to_run(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("distillm_edge.serve.run.run", lambda cfg: seen.setdefault("cfg", cfg))
    monkeypatch.setenv("DISTILLM_EDGE_API_KEY", "from-the-environment")
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "9001", "--parallel", "3",
                                      "--queue", "5", "--block-red-flags", "--audit-db", str(tmp_path / "a.db")])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.host, cfg.port, cfg.parallel, cfg.queue, cfg.block_red_flags) == ("0.0.0.0", 9001, 3, 5, True)
    assert cfg.api_key == "from-the-environment" and cfg.audit_db == tmp_path / "a.db"
    help_text = CliRunner().invoke(app, ["serve", "--help"]).output
    assert "--api-key" in help_text and "--block-red-flags" in help_text
