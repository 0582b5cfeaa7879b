"""Every shipped recipe loads into TrainConfig; config validation names the problem; --list-recipes.

Nothing here loads model weights: all checks run on configs (and the CLI) only.

Run: ``pytest tests/training/test_recipes.py``.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from distillm_edge.cli import app
from distillm_edge.config import ConfigError, from_mapping, load_yaml
from distillm_edge.training import staged
from distillm_edge.training.config import RECIPES_DIR, TrainConfig, list_recipes, resolve_config

EXPECTED = {"tiny-cpu", "med42-llama", "llama-llama-self", "gemma-llama-cross", "med42-multigranularity",
            "medgemma-curriculum-qlora", "multi-teacher"}


def test_every_shipped_recipe_loads_and_opens_with_its_command():
    names = {name for name, _ in list_recipes()}
    assert EXPECTED <= names
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# distillm-edge train --recipe " + path.stem), path
        staged_recipe = "stages" in load_yaml(path)  # staged distillation: each stage is a TrainConfig
        for cfg in staged.resolve(path.stem).stages if staged_recipe else [resolve_config(path.stem)]:
            assert isinstance(cfg, TrainConfig) and cfg.description and cfg.teachers


def test_research_recipes_keep_the_research_hyperparameters():
    for name in EXPECTED - {"tiny-cpu"}:
        cfg = resolve_config(name)
        assert (cfg.batch_size, cfg.grad_accum, cfg.lr, cfg.max_length, cfg.warmup_steps, cfg.epochs) == (1, 40, 1e-6, 1024, 1000, 6)
        assert (cfg.temperature.initial, cfg.temperature.floor) == (8.0, 1.0)
        assert cfg.max_steps is None, name  # all six epochs, not the CPU default's step budget
        assert all(t.quantization == "nf4" for t in cfg.teachers) and cfg.precision == "bf16"
        # full fine-tuning: fp32 master weights under bf16 autocast; QLoRA: a frozen bf16/NF4 base
        assert cfg.student.dtype == ("bfloat16" if cfg.lora is not None else "float32"), name
    assert resolve_config("medgemma-curriculum-qlora").lora is not None
    assert resolve_config("medgemma-curriculum-qlora").curriculum
    assert [t.weight for t in resolve_config("multi-teacher").teachers] == [0.6, 0.4]


def test_default_is_tiny_cpu_and_overrides_apply():
    cfg = resolve_config(overrides={"max_steps": 3, "student": {"layers": "even:10"}, "lora": {"r": 4}})
    assert cfg.max_steps == 3 and cfg.student.layers == "even:10" and cfg.lora.r == 4
    assert [t.model for t in cfg.teachers] == ["smollm2-135m-instruct", "gemma-3-270m"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_stpes": 3}, "Did you mean 'max_steps'"),
        ({"temperature": {"intial": 4}}, "Did you mean 'initial'"),
        ({"lora": {"rank": 4}}, "unknown key 'rank'"),
        ({"kd_weight": 1.5}, "must be in [0, 1]"),
        ({"student": {"quantization": "nf4", "layers": None}}, "QLoRA"),
        ({"student": {"quantization": "nf4"}, "lora": {}}, "cut the layers first"),
        ({"specialty_weights": {"cardiolgy": 1.2}}, "Did you mean 'cardiology'"),
        ({"specialty_weights": "by_frequency"}, "inverse_frequency"),
        ({"attention": {"weight": 0.1}}, "attention.layers"),
        ({"hidden": {"weight": 1.0, "teacher": 5}}, "there are 2 teachers"),
        ({"teacher_weighting": "confidence", "teachers": [{"model": "smollm2-135m-instruct"}]}, "at least two teachers"),
        ({"divergence": "kl"}, "is not one of"),
        ({"deepspeed": "zero3"}, "not implemented yet"),
        ({"teachers": [], "kd_weight": 0.5}, "add a teacher"),
        ({"grad_accum": 0}, "must be >= 1"),
        ({"cross_tokenizer": {"method": "projection", "uld_weight": 0.5}},
         "method projection with uld_weight 0.5 is not possible"),
        ({"cross_tokenizer": {"method": "projection", "projection_rank": 0}}, "cross_tokenizer.projection_rank 0: must be >= 1"),
        ({"cross_tokenizer": {"projection_top_k": -1}}, "cross_tokenizer.projection_top_k -1: must be >= 1"),
        ({"cross_tokenizer": {"method": "mlp"}}, "is not one of"),
    ],
)
def test_config_validation_names_the_problem(data, message):
    with pytest.raises(ConfigError) as exc:
        from_mapping(TrainConfig, data)
    assert message in str(exc.value)


def test_cross_tokenizer_projection_is_an_option_not_the_default():
    assert resolve_config("gemma-llama-cross").cross_tokenizer.method == "shared_vocab"
    cfg = from_mapping(TrainConfig, {"cross_tokenizer": {"method": "projection", "projection_rank": 8}})
    assert cfg.cross_tokenizer.projection_rank == 8 and not cfg.cross_tokenizer.shared_only
    assert TrainConfig().cross_tokenizer.shared_only  # shared_vocab without ULD: the shared-head shortcut applies


def test_unknown_recipe_suggests_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'tiny-cpu'"):
        resolve_config("tiny-cp")


def test_cli_lists_recipes_and_rejects_bad_overrides_before_loading_anything(monkeypatch):
    import distillm_edge.models as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    runner = CliRunner()
    listed = runner.invoke(app, ["train", "--list-recipes"])
    assert listed.exit_code == 0
    for name in EXPECTED:
        assert name in listed.output
    bad = runner.invoke(app, ["train", "max_stpes=3"])
    assert bad.exit_code == 2 and "max_steps" in bad.output
    bad = runner.invoke(app, ["train", "kd_weight=2"])
    assert bad.exit_code == 2 and "kd_weight" in bad.output
