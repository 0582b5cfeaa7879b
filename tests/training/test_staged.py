"""Staged distillation (``training/staged.py``) on tiny random models: stages run in order, a later stage really
uses an earlier stage's trained student (as teacher and as initial weights), finished stages are skipped on a rerun,
and bad ``stage:N`` references are ConfigErrors naming the file, stage and option before anything trains.

Run: ``pytest tests/training/test_staged.py`` (tiny models, ~30 s).
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from distillm_edge.cli import app
from distillm_edge.config import ConfigError
from distillm_edge.models import select_layers
from distillm_edge.training import staged, trainer
from distillm_edge.training.config import resolve_config


def write_recipe(tmp_path, tiny_llama_dir, tiny_data, stage2: dict | None = None, **common) -> str:
    """A two-stage recipe: the tiny Llama teaches a 2-layer cut of itself; that cut teaches a 1-layer cut of itself."""
    data = {
        "description": "tiny staged", "data": str(tiny_data), "max_length": 96, "eval_examples": 2, "real_eval": None,
        "max_steps": 2, "grad_accum": 2, "lr": 3e-3, "warmup_steps": 1, "freeze_embeddings": False, "save_every": 0,
        "progress": False, "tensorboard": False, "threads": 1, "precision": "fp32",
        "stages": [
            {"teachers": [{"model": str(tiny_llama_dir)}], "student": {"model": str(tiny_llama_dir), "layers": "even:2"}},
            stage2 or {"teachers": [{"model": "stage:1"}, {"model": str(tiny_llama_dir)}],
                       "student": {"model": "stage:1", "layers": "even:1"}},
        ],
    } | common
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


class Recorder:
    """Wraps ``trainer.setup``: which stages trained, and the weights each one started from."""

    def __init__(self, monkeypatch):
        self.runs: list[dict] = []
        real = trainer.setup

        def setup(cfg, **kwargs):
            r = real(cfg, **kwargs)
            snap = lambda m: {k: v.detach().clone() for k, v in m.state_dict().items()}  # noqa: E731
            self.runs.append({"out": cfg.out, "teachers": [snap(t.model) for t in r.teachers],
                              "student": snap(r.accelerator.unwrap_model(r.student))})
            return r

        monkeypatch.setattr(trainer, "setup", setup)


def test_stages_run_in_order_and_stage_two_uses_stage_one(tiny_llama_dir, tiny_data, tmp_path, monkeypatch, capsys):
    rec = Recorder(monkeypatch)
    root = tmp_path / "out"
    cfg = staged.resolve(config_file=write_recipe(tmp_path, tiny_llama_dir, tiny_data), overrides={"out": str(root)})
    assert staged.run(cfg) == root
    assert [r["out"] for r in rec.runs] == [str(root / "stage-1"), str(root / "stage-2")]
    saved = load_file(str(root / "stage-1" / "model" / "model.safetensors"))
    teacher, student = rec.runs[1]["teachers"][0], rec.runs[1]["student"]
    # stage 2's first teacher is stage 1's trained student, weight for weight
    assert set(saved) <= set(teacher) and all(torch.equal(teacher[k], saved[k]) for k in saved)
    # ... which moved in training (so the equality is not the untrained cut's)
    assert not torch.equal(saved["model.layers.0.mlp.up_proj.weight"], rec.runs[0]["student"]["model.layers.0.mlp.up_proj.weight"])
    # stage 2's student starts as the even:1 cut of stage 1's student
    kept = select_layers(2, "even:1")[0]
    assert torch.equal(student["model.layers.0.mlp.down_proj.weight"], saved[f"model.layers.{kept}.mlp.down_proj.weight"])
    assert torch.equal(student["model.norm.weight"], saved["model.norm.weight"])
    stage2 = yaml.safe_load((root / "stage-2" / "config.yaml").read_text(encoding="utf-8"))
    assert stage2["teachers"][0]["model"] == stage2["student"]["model"] == str(root / "stage-1" / "model")
    # the summary table: one row per stage, with the held-out figures of each
    rows = json.loads((root / "staged.json").read_text(encoding="utf-8"))["stages"]
    assert [r["stage"] for r in rows] == [1, 2] and rows[1]["teachers"][0] == "stage 1"
    for r in rows:
        ev = json.loads((root / f"stage-{r['stage']}" / "summary.json").read_text(encoding="utf-8"))["evaluation"]
        assert r["held_out_after"] == ev["student_perplexity"]["after"] and r["steps"] == 2
    out = capsys.readouterr().out
    assert "| stage" in out and "held-out ppl after" in out and (root / "staged.md").is_file()


def test_rerun_skips_finished_stages_and_resumes_the_rest(tiny_llama_dir, tiny_data, tmp_path, monkeypatch):
    import shutil

    rec = Recorder(monkeypatch)
    recipe = write_recipe(tmp_path, tiny_llama_dir, tiny_data, eval_examples=0)
    root = tmp_path / "out"
    staged.run(staged.resolve(config_file=recipe, overrides={"out": str(root)}))
    before = (root / "stage-1" / "model" / "model.safetensors").stat().st_mtime_ns
    shutil.rmtree(root / "stage-2")
    # the CLI's way back in: --resume <out> reads <out>/staged.yaml
    result = CliRunner().invoke(app, ["train", "--resume", str(root)])
    assert result.exit_code == 0, result.output
    assert [r["out"] for r in rec.runs] == [str(root / "stage-1"), str(root / "stage-2"), str(root / "stage-2")]
    assert (root / "stage-1" / "model" / "model.safetensors").stat().st_mtime_ns == before
    assert "finished earlier" in result.output and (root / "stage-2" / "summary.json").is_file()
    staged.run(staged.resolve(config_file=recipe, overrides={"out": str(root)}))  # everything finished: nothing trains
    assert len(rec.runs) == 3
    # a finished stage trained with other data/model settings is not silently reused
    with pytest.raises(ConfigError, match=r"stage 1: .* other settings \(student\)"):
        staged.run(staged.resolve(config_file=recipe, overrides={"out": str(root), "student": {"layers": "0,1"}}))


@pytest.mark.parametrize(
    ("stage2", "message"),
    [
        ({"teachers": [{"model": "stage:3"}]}, "stage 2, teachers[0].model: 'stage:3' names no stage; this recipe has "
                                               "stages 1 to 2"),
        ({"teachers": [{"model": "stage:2"}]}, "stage 2, teachers[0].model: 'stage:2': stage 2 has not run when stage "
                                               "2 starts"),
        ({"student": {"model": "stage:one"}}, "stage 2, student.model: 'stage:one' names no stage"),
        ({"teachers": [{"model": "stage:0"}]}, "'stage:0' names no stage"),
        ({"data": "stage:1"}, "stage 2, data: only teachers[].model and student.model can name a stage"),
        ({"out": "elsewhere"}, "stage 2: out: each stage writes to <out>/stage-2"),
    ],
)
def test_bad_references_name_the_file_stage_and_option(tiny_llama_dir, tiny_data, tmp_path, monkeypatch, stage2, message):
    monkeypatch.setattr(trainer, "run", lambda *a, **k: pytest.fail("nothing may train"))
    recipe = write_recipe(tmp_path, tiny_llama_dir, tiny_data, stage2=stage2)
    with pytest.raises(ConfigError) as exc:
        staged.resolve(config_file=recipe, overrides={"out": str(tmp_path / "out")})
    assert message in str(exc.value) and recipe in str(exc.value)
    result = CliRunner().invoke(app, ["train", "--config", recipe])  # the CLI reports the same, before training
    shown = " ".join(result.output.split())  # the console wraps at 80 columns, wherever the path ends
    assert result.exit_code != 0 and "stage 2" in shown and not (tmp_path / "out").exists()


def test_a_staged_recipe_is_not_a_single_run():
    with pytest.raises(ConfigError, match="declares stages"):
        resolve_config("staged-cpu")
    cfg = staged.resolve("staged-cpu", overrides={"out": "runs/x", "max_steps": 3})
    assert [c.max_steps for c in cfg.stages] == [3, 3]  # command-line overrides apply to every stage
    assert cfg.stages[1].student.model == cfg.stages[1].teachers[0].model == "runs/x/stage-1/model"
    assert len(select_layers(30, cfg.stages[0].student.layers)) == 20
    assert len(select_layers(20, cfg.stages[1].student.layers)) == 10
