"""The default run's integration: bf16 autocast chosen on a CPU with native bf16, the real-data
generalization check at the end of a run, and the tiny-cpu recipe's budget settings.

Run: ``pytest tests/training/test_integration_defaults.py`` (tiny random models, seconds).
"""

from __future__ import annotations

import json
import math

import pytest
from tinyrun import tiny_config

from distillm_edge.errors import UserError
from distillm_edge.training import evaluation, precision, trainer
from distillm_edge.training.config import resolve_config


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "no")])
def test_auto_precision_is_bf16_autocast_on_a_cpu_with_native_bf16_else_fp32(monkeypatch, native, expected):
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    cfg = resolve_config("tiny-cpu")
    assert cfg.precision == "auto"
    assert precision.mixed_precision(cfg) == expected
    assert precision.mixed_precision(resolve_config("tiny-cpu", overrides={"precision": "fp32"})) == "no"


def test_native_bf16_follows_the_cpu_flags():
    try:
        flags = next(line for line in open("/proc/cpuinfo", encoding="utf-8") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags on this system")
    assert precision.cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & set(flags))


def medalpaca_like(path, n):
    rows = [{"instruction": "Answer this question truthfully", "input": f"What causes condition {i}?",
             "output": f"Condition {i} is caused by inflammation of the tissue and is treated with rest."} for i in range(n)]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_real_eval_reports_student_and_teacher_perplexity_on_records_never_trained_on(tiny_llama_dir, tiny_data, tmp_path):
    data = medalpaca_like(tmp_path / "real.json", 7)
    run_dir = trainer.run(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "run", max_steps=2, real_eval=str(data),
                                      real_eval_examples=5))
    gen = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["generalization"]
    assert gen["examples"] == 5 and gen["student_tokens"] > 0
    (name, teacher), = gen["teachers"].items()
    assert teacher["same_tokenizer"] and math.isfinite(teacher["perplexity"])
    assert teacher["ratio"] == pytest.approx(gen["student_perplexity"] / teacher["perplexity"])
    assert "## Generalization (real_eval)" in (run_dir / "report.md").read_text(encoding="utf-8")


def test_real_eval_absent_is_skipped_and_bad_records_are_named(tiny_llama_dir, tiny_data, tmp_path):
    run_dir = trainer.run(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "run", max_steps=1,
                                      real_eval=str(tmp_path / "missing.json")))
    assert json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["generalization"] is None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "q", "input": ""}]), encoding="utf-8")
    with pytest.raises(UserError, match="bad.json: record 0 has no instruction and output/response"):
        evaluation.real_records(bad, 5)
    assert [r["response"] for r in evaluation.real_records(medalpaca_like(tmp_path / "ok.json", 4), 2)] == [
        "Condition 2 is caused by inflammation of the tissue and is treated with rest.",
        "Condition 3 is caused by inflammation of the tissue and is treated with rest."]


def test_tiny_cpu_recipe_budget():
    cfg = resolve_config("tiny-cpu")
    assert cfg.max_steps is not None and cfg.eval_examples <= 64  # a bounded run and a bounded before/after evaluation
    assert cfg.real_eval and cfg.real_eval.endswith("medical_meadow_small_train.json") and cfg.real_eval_examples == 100
