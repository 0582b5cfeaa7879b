"""End to end: ``run(EvalConfig)`` on a tiny model with teacher and baseline, on the real data files;
config validation; the CLI parses into the config and reports bad input as one line.

Run: ``pytest tests/eval/test_run.py``.
"""

from __future__ import annotations

import json

import pytest

from distillm_edge.errors import UserError
from distillm_edge.eval.config import EvalConfig


def test_config_validation():
    with pytest.raises(UserError, match="unknown task"):
        EvalConfig(model="m", tasks=("mmlu",))
    with pytest.raises(UserError, match="needs --data"):
        EvalConfig(model="m", tasks=("generation",))
    with pytest.raises(UserError, match="would score the few-shot examples"):
        EvalConfig(model="m", split="dev", num_fewshot=5)
    with pytest.raises(UserError, match="--backend"):
        EvalConfig(model="m", backend="vllm")


def test_run_writes_a_reproducible_run_dir(tmp_path, tiny_llama_dir, shared_data):
    import torch

    from distillm_edge.eval.run import run

    before = torch.get_num_threads()
    cfg = EvalConfig(model=str(tiny_llama_dir), teacher=str(tiny_llama_dir), baseline=str(tiny_llama_dir),
                     tasks=("mmlu_medical", "medqa", "medmcqa", "pubmedqa", "generation"), data_dir=str(shared_data),
                     num_fewshot=1, limit=1, data=str(shared_data / "medquad" / "medquad_sample4k.jsonl"),
                     max_new_tokens=3, max_ref_words=8, threads=1, out=str(tmp_path / "run"))
    try:
        summary = run(cfg)
    finally:
        torch.set_num_threads(before)
    out = tmp_path / "run"
    for name in ("results.json", "report.md", "config.yaml", "mmlu_medical.png", "benchmarks.png",
                 "samples/model.mmlu_medical_val.anatomy.jsonl", "samples/teacher.generation.jsonl"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["manifest"]["models"]["model"]["sha256"] and len(saved["manifest"]["data"]) == 13
    assert saved["manifest"]["data"]["mmlu_medical_val/anatomy"]["sha256"].count(" + ") == 1  # val + dev files
    model = saved["results"]["model"]
    # the split is in every task id (the shared data holds MMLU val, MedQA dev, MedMCQA dev, PubMedQA's non-test half)
    assert set(model["groups"]) == {"mmlu_medical_val", "medqa_dev", "medmcqa_dev", "pubmedqa_pqal_dev",
                                    "pubmedqa_pqal_dev_no_context"}
    assert model["groups"]["mmlu_medical_val"]["n"] == 8 and model["tasks"]["medqa_dev"]["n"] == 1
    assert model["tasks"]["medqa_dev"]["acc_stderr"] == 0.0 and len(model["groups"]["mmlu_medical_val"]["acc_ci95"]) == 2
    # the same model as teacher and baseline: retention 1, improvement 0 (perplexity inverted too)
    assert summary["retention"]["mmlu_medical_val micro acc"] in (1.0, None)
    assert summary["retention"]["generation bits_per_byte"] == pytest.approx(1.0)
    assert "generation token_perplexity" not in summary["retention"]  # per-token: shown per model only
    assert summary["improvement"]["medqa_dev acc"] == 0.0
    assert summary["noise"]["teacher"]["mmlu_medical_val micro acc"]["within_noise"]
    assert summary["noise"]["teacher"]["generation bits_per_byte"]["diff"] == 0.0
    report = (out / "report.md").read_text()
    assert "| mmlu_medical_val macro acc |" in report and "retention" in report and "within noise" in report


def test_cli_parses_and_reports_bad_input(tmp_path):
    from typer.testing import CliRunner

    from distillm_edge.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["eval", "--model", "m", "--tasks", "mmlu,medqa"])
    assert result.exit_code == 2 and "unknown task(s) mmlu" in result.output
    (tmp_path / "cfg.yaml").write_text("model: m\nnum_fewshots: 3\n")
    result = runner.invoke(app, ["eval", "--config", str(tmp_path / "cfg.yaml")])
    assert result.exit_code == 2 and "Did you mean 'num_fewshot'" in result.output
    result = runner.invoke(app, ["eval", "--model", "no-such-model", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "model 'no-such-model' not found" in result.output
