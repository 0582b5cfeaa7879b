"""``distillm-edge data prepare`` parses options (and --config YAML) and reports errors cleanly.

Run: ``pytest tests/data/test_cli.py``.
"""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from distillm_edge.cli.data import register


def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """test root"""

    register(root)
    return root


def test_prepare_builtin_then_refuse_overwrite(tmp_path):
    runner = CliRunner()
    args = ["data", "prepare", "--max-tokens", "0", "--out", str(tmp_path / "out"), "--no-progress"]
    first = runner.invoke(app(), args)
    assert first.exit_code == 0, first.output
    from distillm_edge.data import builtin_corpus_path

    n = sum(1 for x in builtin_corpus_path().read_text(encoding="utf-8").splitlines() if x.strip())
    assert f"wrote {n:,} records" in first.output  # the embedded corpus grows (issue 12)
    again = runner.invoke(app(), args)
    assert again.exit_code == 2 and "already exists and is not empty" in again.output


def test_config_file_with_option_override(tmp_path):
    data = tmp_path / "qa.csv"
    data.write_text("Q,A\nWhat is a normal heart rate?,60 to 100 per minute.\n", encoding="utf-8")
    config = tmp_path / "prep.yaml"
    config.write_text(f"inputs: [{data}]\nout: {tmp_path / 'ignored'}\nmax_tokens: 0\nprogress: false\n", encoding="utf-8")
    result = CliRunner().invoke(app(), ["data", "prepare", "--config", str(config), "--columns", "instruction=Q,response=A",
                                        "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "stats.json").exists() and not (tmp_path / "ignored").exists()


def test_bad_option_exits_2_with_message(tmp_path):
    result = CliRunner().invoke(app(), ["data", "prepare", "--valid-fraction", "1.5", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "valid-fraction" in result.output
    result = CliRunner().invoke(app(), ["data", "prepare", "--columns", "oops", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "FIELD=COLUMN" in result.output
