"""Eval on an ONNX export: a tiny Llama exported with ``distillm-edge export --format onnx`` scores
MCQ items like its PyTorch source, and a run records the export directory's hash.

Run: ``pytest tests/eval/test_onnx_eval.py`` (slow-marked: the ONNX export takes a few minutes on a busy CPU).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from distillm_edge.eval.mcq_data import MCQItem
from distillm_edge.eval.prompts import MCQTask, mmlu_description

pytestmark = pytest.mark.slow

ITEMS = (
    MCQItem("t:1", "Insulin is secreted by", ("alpha cells", "beta cells", "delta cells", "acinar cells"), 1),
    MCQItem("t:2", "A deficiency of vitamin B12 causes", ("scurvy", "rickets", "pernicious anemia", "pellagra"), 2),
)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, tiny_llama_dir):
    from distillm_edge.export import ExportConfig, run

    out = tmp_path_factory.mktemp("eval_onnx")
    return run(ExportConfig(model=str(tiny_llama_dir), format="onnx", quant="fp32", outdir=out, verify=False)).artifact


def test_onnx_scores_like_torch(onnx_dir, tiny_llama_dir):
    from distillm_edge.backends import open_backend
    from distillm_edge.eval.scoring import score_task

    task = MCQTask("mmlu_medical/anatomy", "mmlu_medical", "mmlu", ITEMS, ITEMS[:1], mmlu_description("anatomy"))
    onnx = open_backend(str(onnx_dir), threads=1)
    torch_backend = open_backend(str(tiny_llama_dir), backend="torch", threads=1)
    try:
        assert onnx.info.backend == "onnx"
        np.testing.assert_allclose(score_task(onnx, task).loglik, score_task(torch_backend, task).loglik, atol=1e-3)
    finally:
        onnx.close()


def test_run_on_onnx_records_the_export_hash(onnx_dir, tmp_path, shared_data):
    from distillm_edge.eval.config import EvalConfig
    from distillm_edge.eval.run import run

    run(EvalConfig(model=str(onnx_dir), data_dir=str(shared_data), limit=1, threads=1, out=str(tmp_path / "run")))
    models = json.loads((tmp_path / "run" / "results.json").read_text())["manifest"]["models"]
    assert models["model"]["backend"] == "onnx" and len(models["model"]["sha256"]) == 64
