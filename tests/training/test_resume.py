"""Resume safety: changed loss settings are refused unless explicitly allowed (and then logged), and a Ctrl-C that
lands between ``optimizer.step()`` and the step counter does not apply that step twice.

Run: ``pytest tests/training/test_resume.py``.
"""

from __future__ import annotations

import json
import signal

import pytest
import torch
from tinyrun import tiny_config, train_rows

from distillm_edge.config import ConfigError
from distillm_edge.training import trainer


def test_resume_refuses_changed_loss_settings_unless_allowed(tiny_llama_dir, tiny_data, tmp_path):
    out = tmp_path / "run"
    trainer.run(tiny_config(tiny_llama_dir, tiny_data, out, max_steps=2, save_every=0))
    changed = tiny_config(tiny_llama_dir, tiny_data, out, max_steps=3, save_every=0, kd_weight=0.8,
                          temperature={"initial": 4.0})
    with pytest.raises(ConfigError) as exc:
        trainer.run(changed, resume=True)
    assert "kd_weight 0.5 -> 0.8" in str(exc.value) and "temperature" in str(exc.value)
    assert "--allow-config-change" in str(exc.value)
    trainer.run(changed, resume=True, allow_config_change=True)
    events = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [e for e in events if e["kind"] == "config_change"]
    assert logged and logged[0]["changed"]["kd_weight"] == [0.5, 0.8]
    assert [r["step"] for r in train_rows(out)] == [1, 2, 3]
    # max_steps/epochs may change freely
    trainer.run(tiny_config(tiny_llama_dir, tiny_data, out, max_steps=4, save_every=0, kd_weight=0.8,
                            temperature={"initial": 4.0}), resume=True)


def test_ctrl_c_right_after_the_optimizer_step_does_not_apply_it_twice(tiny_llama_dir, tiny_data, tmp_path,
                                                                       monkeypatch):
    from accelerate.optimizer import AcceleratedOptimizer

    full = trainer.run(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "full"))
    expected = [r["loss"] for r in train_rows(full)]
    original = AcceleratedOptimizer.step
    calls = {"n": 0}

    def step_then_ctrl_c(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # the third update is applied; Ctrl-C arrives before the step counter moves
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(AcceleratedOptimizer, "step", step_then_ctrl_c)
    cut = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        trainer.run(cut)
    monkeypatch.setattr(AcceleratedOptimizer, "step", original)
    trainer.run(cut, resume=True)
    got = {r["step"]: r["loss"] for r in train_rows(tmp_path / "cut")}
    assert [got[s] for s in range(1, 7)] == pytest.approx(expected, rel=1e-6, abs=1e-7)
    from safetensors.torch import load_file

    a = load_file(full / "checkpoints" / "step-000006" / "trainable.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoints" / "step-000006" / "trainable.safetensors")
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
