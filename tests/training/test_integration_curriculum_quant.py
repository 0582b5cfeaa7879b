"""Curriculum (staged sampling with replay) and progressive fake quantization through the real trainer.

Run: ``pytest tests/training/test_integration_curriculum_quant.py`` (tiny random models, seconds).
"""

from __future__ import annotations

import json

import pytest
import torch
from tinyrun import tiny_config, train_rows

from distillm_edge.config import ConfigError
from distillm_edge.training import trainer
from distillm_edge.training.curriculum import curriculum_batches


def test_staged_curriculum_walks_the_stages_in_order_and_logs_them(tiny_llama_dir, tiny_data, tmp_path):
    import datasets

    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "run", max_steps=None, batch_size=1, grad_accum=2,
                      curriculum=True, curriculum_replay=0.25)
    run_dir = trainer.run(cfg)
    stages = [r["stage"] for r in train_rows(run_dir)]
    assert stages == sorted(stages) and len(set(stages)) >= 2, stages  # phases in order, more than one stage
    difficulties = [int(x) for x in datasets.load_from_disk(str(tiny_data))["train"]["difficulty"]]
    plan = curriculum_batches(difficulties, 1, seed=0, epochs=1, replay=0.25)
    assert stages == [plan.stages[2 * i] for i in range(len(plan.batches) // 2)]  # the step's first micro-batch


def test_fake_quant_schedule_lowers_the_bits_and_the_saved_student_is_plain_float(tiny_llama_dir, tiny_data, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "run", max_steps=6,
                      fake_quant={"schedule": [[0.0, 16], [0.3, 8], [0.6, 4]]})
    run_dir = trainer.run(cfg)
    rows = train_rows(run_dir)
    assert [r["bits"] for r in rows] == [16, 16, 8, 8, 4, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert not any("parametrizations" in k for k in model.state_dict())
    assert json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["steps"] == 6


def test_fake_quant_at_4_bits_changes_the_forward(tiny_llama_dir, tiny_data, tmp_path):
    """The wiring is real: a run held at 4 bits trains a different student than one without fake quantization."""
    common = {"max_steps": 2, "warmup_steps": 0}
    a = trainer.run(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "a", **common))
    b = trainer.run(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "b", fake_quant={"schedule": [[0.0, 4]]}, **common))
    la, lb = train_rows(a)[0]["loss/ce"], train_rows(b)[0]["loss/ce"]
    assert la != pytest.approx(lb, rel=1e-6)


@pytest.mark.parametrize(("changes", "message"), [
    ({"curriculum_replay": 0.2}, "curriculum is false"),
    ({"curriculum": True, "curriculum_replay": 1.0}, "must be in [0, 1)"),
    ({"fake_quant": {"schedule": [[0.5, 8]]}}, "fake_quant.schedule"),
])
def test_bad_curriculum_and_fake_quant_settings_name_the_fix(tiny_llama_dir, tiny_data, tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        tiny_config(tiny_llama_dir, tiny_data, tmp_path / "x", **changes)
