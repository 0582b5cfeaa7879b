"""The `bench` CLI only parses: options become a BenchConfig; `bench compare A B` compares.

Run: ``pytest tests/bench/test_bench_cli.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench_fakes import fake_result, fake_row
from typer.testing import CliRunner

from distillm_edge.cli import app

runner = CliRunner()


def test_bench_options_become_a_config(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr("distillm_edge.bench.run.run", lambda cfg: seen.append(cfg))
    result = runner.invoke(app, ["bench", "--model", "smollm2-135m-instruct", "--model", "x.gguf",
                                 "--backend", "torch", "--backend", "gguf", "--dtype", "bf16", "--dtype", "fp32",
                                 "--prompt-lengths", "64,256", "--gen-tokens", "8", "--threads", "1",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (cfg,) = seen
    assert [(m.spec, m.backend, m.dtype) for m in cfg.models] == [
        ("smollm2-135m-instruct", "torch", "bf16"), ("x.gguf", "gguf", "fp32")]
    assert (cfg.prompt_lengths, cfg.gen_tokens, cfg.threads, cfg.out) == ((64, 256), 8, 1, Path(tmp_path))


def test_quick_flag_and_errors(monkeypatch):
    seen = []
    monkeypatch.setattr("distillm_edge.bench.run.run", lambda cfg: seen.append(cfg))
    assert runner.invoke(app, ["bench", "--model", "m", "--quick"]).exit_code == 0
    assert seen[0].quick and seen[0].prompt_lengths == (64,) and seen[0].batch_repeats == 1
    missing = runner.invoke(app, ["bench"])
    assert missing.exit_code != 0 and "--model" in missing.output
    wrong = runner.invoke(app, ["bench", "--model", "a", "--model", "b", "--model", "c",
                                "--backend", "torch", "--backend", "gguf"])
    assert wrong.exit_code == 2 and "--backend was given 2 times" in wrong.output


def test_compare_subcommand(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(fake_result([fake_row(decode=100.0)])))
    b.write_text(json.dumps(fake_result([fake_row(decode=120.0)])))
    result = runner.invoke(app, ["bench", "compare", str(a), str(b)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "(1.20x)" in result.output
    missing = runner.invoke(app, ["bench", "compare", str(a), str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and "none.json: no such" in " ".join(missing.output.split())
