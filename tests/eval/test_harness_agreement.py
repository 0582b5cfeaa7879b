"""Agreement with lm-evaluation-harness: same prompts, same choice log-likelihoods, same accuracy.

lm-eval runs our generated YAML tasks (``eval.harness``) on the same local MMLU CSVs with the
``hf`` model; we score the same items with ``eval.scoring`` on the torch backend (the same loaded
model). The bar is accuracy within 1 point per subject; we also require identical prompts and
log-likelihoods within 2e-3, and the same accuracy standard error. Kept small: 2 subjects x 4 rows, 1-shot, on the embedded SmolLM2.

Run: ``pytest tests/eval/test_harness_agreement.py`` (slow-marked, about a minute).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SUBJECTS = ("anatomy", "nutrition")  # nutrition: 1 of 4 right at 1-shot, so its stderr is not 0


def test_matches_lm_eval_harness(tmp_path, shared_data, smollm2_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    import torch

    from distillm_edge.backends.torch_backend import TorchBackend

    before = torch.get_num_threads()
    backend = TorchBackend(str(smollm2_dir), threads=1)  # both sides share these threads
    try:
        _compare(backend, tmp_path, shared_data, smollm2_dir)
    finally:
        torch.set_num_threads(before)


def _compare(backend, tmp_path, shared_data, smollm2_dir):
    from distillm_edge.eval import harness, metrics
    from distillm_edge.eval.config import EvalConfig
    from distillm_edge.eval.prompts import context
    from distillm_edge.eval.run import build_tasks
    from distillm_edge.eval.scoring import score_task

    names = harness.write_mmlu_tasks(shared_data / "mmlu", tmp_path / "tasks", "val", SUBJECTS)
    reference = harness.run_harness(backend.model, backend.tokenizer, tmp_path / "tasks", names, num_fewshot=1,
                                    limit=4, batch_size=4)
    cfg = EvalConfig(model=str(smollm2_dir), data_dir=str(shared_data), num_fewshot=1, limit=4)
    tasks = {t.name.split("/")[1]: t for t in build_tasks(cfg) if t.name.split("/")[1] in SUBJECTS}
    assert any(reference[s]["acc_stderr"] > 0 for s in SUBJECTS)  # the stderr check below is not 0 == 0
    for subject in SUBJECTS:
        ours = score_task(backend, tasks[subject])
        ref = reference[subject]
        assert [context(tasks[subject], item) for item in tasks[subject].items] == ref["prompts"]
        np.testing.assert_allclose(ours.loglik, np.array(ref["loglik"]), atol=2e-3)
        acc = 100.0 * np.mean(ours.pred == ours.gold)
        assert abs(acc - ref["acc"]) <= 1.0, (subject, acc, ref["acc"])
        # the standard error eval reports is lm-eval's acc_stderr
        assert metrics.mean_stderr(100.0 * (ours.pred == ours.gold)) == pytest.approx(ref["acc_stderr"], abs=1e-9)
