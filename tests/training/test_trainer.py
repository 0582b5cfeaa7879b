"""The training recipe end to end on tiny random models (seconds), plus one slow run of the real tiny-cpu recipe.

- a short run: loss falls, the run directory has every file, the student reloads as a normal HF checkpoint;
- Ctrl-C (KeyboardInterrupt) saves a checkpoint; ``--resume`` reproduces the uninterrupted run's losses;
- ``cross_tokenizer.method: projection``: the learned vocabulary projection trains, is saved, and resumes;
- NaN/inf losses skip the step (counted); ``max_bad_steps`` in a row stop the run with a message;
- checks that need the tokenizers (hub ids offline, layer maps) fail before training;
- slow: ``tiny-cpu`` with both embedded teachers (Gemma-3 cross-tokenizer included) for a few steps.

Run: ``pytest tests/training/test_trainer.py`` (``-m slow`` for the real recipe).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from tinyrun import tiny_config, train_rows

from distillm_edge.config import ConfigError
from distillm_edge.errors import UserError
from distillm_edge.training import step, trainer


def test_short_run_learns_and_writes_a_complete_run_directory(tiny_llama_dir, tiny_gemma_dir, tiny_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "run", max_steps=8, eval_examples=4, tensorboard=True,
                      teachers=[{"model": str(tiny_llama_dir), "weight": 0.6}, {"model": str(tiny_gemma_dir), "weight": 0.4}],
                      specialty_weights="inverse_frequency", curriculum=True)
    run_dir = trainer.run(cfg)
    rows = train_rows(run_dir)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert {"loss/ce", "loss/kd", "tau", "lr", "tokens_per_s"} <= set(rows[0])
    assert any(k.startswith("loss/kd/") and "gemma" in k for k in rows[0])  # the cross-tokenizer teacher contributed
    first, last = rows[0]["loss/ce"], sum(r["loss/ce"] for r in rows[-2:]) / 2
    assert last < first - 0.2, (first, last)  # a run that does not learn stays within ~0.05
    assert rows[0]["tau"] == 8.0 and rows[-1]["tau"] < rows[0]["tau"]
    for name in ("config.yaml", "metrics.jsonl", "loss_curve.png", "report.md", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert [p.name for p in sorted((run_dir / "checkpoints").iterdir())] == ["step-000006", "step-000008"]  # keep 2
    assert (run_dir / "checkpoints" / "step-000008" / "trainable.safetensors").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    ev = summary["evaluation"]
    assert ev["student_perplexity"]["after"] < ev["student_perplexity"]["before"]
    assert set(ev["teachers"]) == {tiny_llama_dir.name, tiny_gemma_dir.name}
    assert "alignment" not in ev["teachers"][tiny_llama_dir.name]  # same tokenizer: nothing to align
    al = ev["teachers"][tiny_gemma_dir.name]["alignment"]  # Gemma's real tokenizer against SmolLM2's
    assert 0.5 < al["aligned_share"] <= 1 and 0.5 < al["vocab_overlap"] < 1 and 0 < al["teacher_mass_on_shared"] <= 1
    assert f"Alignment to {tiny_gemma_dir.name}:" in (run_dir / "report.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert model.config.num_hidden_layers == 1 and model.config.distillm_layer_map == {"0": 0}
    assert list((run_dir / "model").glob("*.safetensors"))
    assert AutoTokenizer.from_pretrained(run_dir / "model").chat_template


def interrupt_at_call(n: int, compute_loss):
    """``compute_loss`` that raises KeyboardInterrupt (a Ctrl-C) on its ``n``-th call."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return compute_loss(*args, **kwargs)

    return wrapped


def test_interrupted_run_resumes_with_the_same_losses(tiny_llama_dir, tiny_data, tmp_path, monkeypatch):
    full = trainer.run(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "full"))
    expected = [r["loss"] for r in train_rows(full)]

    original = step.compute_loss
    monkeypatch.setattr(step, "compute_loss", interrupt_at_call(9, original))  # step 5's first micro-batch (grad_accum 2)
    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        trainer.run(cfg)
    assert (tmp_path / "cut" / "checkpoints" / "step-000004").is_dir()  # saved on Ctrl-C
    monkeypatch.setattr(step, "compute_loss", original)
    with pytest.raises(UserError, match="--resume"):
        trainer.run(cfg)  # a new run into a used directory is refused
    trainer.run(cfg, resume=True)
    got = {r["step"]: r["loss"] for r in train_rows(tmp_path / "cut")}
    assert [got[s] for s in range(1, 7)] == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_learned_vocab_projection_trains_saves_and_resumes(tiny_llama_dir, tiny_cross_dir, tiny_data, tmp_path,
                                                          monkeypatch, capsys):
    """cross_tokenizer.method: projection with a cross-tokenizer teacher: its own CE is logged, the full teacher
    logits feed the top-k, the projection is saved beside the model, and --resume reproduces the losses."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    def cfg(out):
        return tiny_config(tiny_llama_dir, tiny_data, out, teachers=[{"model": str(tiny_cross_dir)}],
                           cross_tokenizer={"method": "projection", "projection_rank": 8, "projection_top_k": 16,
                                            "min_shared": 100})

    widths = []
    original_forward = step.teacher_forward

    def recording_forward(*args, **kwargs):
        out = original_forward(*args, **kwargs)
        widths.append(out.logits.shape[-1])
        return out

    monkeypatch.setattr(step, "teacher_forward", recording_forward)
    full = trainer.run(cfg(tmp_path / "full"))
    log = capsys.readouterr().err
    assert "other tokenizer" in log and "shared tokens" in log  # the shared-vocab diagnostics still print
    assert "learned vocabulary projection 1,024 -> 49,152 (top-16, rank 8" in log
    assert widths and set(widths) == {1024}  # the full teacher logits, not the shared-vocabulary shortcut
    rows = train_rows(full)
    name = tiny_cross_dir.name
    assert all(math.isfinite(r[f"loss/projection_ce/{name}"]) and r[f"loss/projection_ce/{name}"] > 0 for r in rows)
    assert all(math.isfinite(r[f"loss/kd/{name}"]) and r[f"loss/kd/{name}"] > 0 for r in rows)
    saved = load_file(full / f"projection-{name}.safetensors")
    assert {k: tuple(v.shape) for k, v in saved.items()} == {"down.weight": (1024, 8), "up.weight": (49152, 8),
                                                             "up.bias": (49152,)}
    with safe_open(full / f"projection-{name}.safetensors", "pt") as fh:
        assert fh.metadata()["top_k"] == "16" and fh.metadata()["teacher"] == str(tiny_cross_dir)
    step3, step6 = (load_file(full / "checkpoints" / s / "trainable.safetensors") for s in ("step-000003", "step-000006"))
    assert torch.equal(step6["vocab_projections.0.up.weight"], saved["up.weight"])
    assert not torch.equal(step3["vocab_projections.0.up.weight"], step6["vocab_projections.0.up.weight"])  # it trains
    assert not any(k.startswith("vocab_projections") for k in load_file(next((full / "model").glob("*.safetensors"))))

    original = step.compute_loss
    monkeypatch.setattr(step, "compute_loss", interrupt_at_call(9, original))  # step 5's first micro-batch (grad_accum 2)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(cfg(tmp_path / "cut"))
    monkeypatch.setattr(step, "compute_loss", original)
    trainer.run(cfg(tmp_path / "cut"), resume=True)
    got = {r["step"]: r for r in train_rows(tmp_path / "cut")}
    for key in ("loss", f"loss/projection_ce/{name}"):
        assert [got[s][key] for s in range(1, 7)] == pytest.approx([r[key] for r in rows], rel=1e-6, abs=1e-7), key
    resumed = load_file(tmp_path / "cut" / f"projection-{name}.safetensors")
    assert all(torch.allclose(resumed[k], saved[k], rtol=1e-5, atol=1e-6) for k in saved)


def test_non_finite_losses_are_skipped_then_stop_the_run(tiny_llama_dir, tiny_data, tmp_path, monkeypatch):
    original = step.compute_loss
    bad_steps: set[int] = {2}

    def poisoned(r, batch, tau, counts=None):
        parts = original(r, batch, tau, counts)
        if r.state.step + 1 in bad_steps:
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(step, "compute_loss", poisoned)
    run_dir = trainer.run(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "one", max_steps=4))
    rows = train_rows(run_dir)
    assert [r["skipped"] for r in rows] == [False, True, False, False]
    assert json.loads((run_dir / "summary.json").read_text())["bad_steps"] == 1
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert all(torch.isfinite(p).all() for p in model.parameters())

    bad_steps.update(range(1, 100))
    with pytest.raises(trainer.TrainingStopped, match="3 steps in a row had a non-finite loss") as exc:
        trainer.run(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "all", max_bad_steps=3))
    assert "--resume" in str(exc.value) and (tmp_path / "all" / "checkpoints" / "step-000003").is_dir()


def test_hidden_and_attention_alignment_train_projections(tiny_llama_dir, tiny_data, tmp_path):
    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "align", max_steps=2, save_every=0,
                      hidden={"weight": 1.0}, attention={"weight": 0.5, "layers": [0]}, l2_weight=0.01,
                      student={"model": str(tiny_llama_dir), "layers": "1"})
    run_dir = trainer.run(cfg)
    rows = train_rows(run_dir)
    assert all(r["loss/hidden"] > 0 and math.isfinite(r["loss/attention"]) and "loss/l2" in r for r in rows)
    assert rows[1]["loss/l2"] > 0  # the weights moved away from their initial values
    bad = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "bad", attention={"weight": 0.5, "layers": [3]})
    with pytest.raises(ConfigError, match=r"attention.layers \[3\]"):
        trainer.run(bad)


def test_lora_student_saves_merged_weights_and_adapter(tiny_llama_dir, tiny_data, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "lora", max_steps=2, save_every=0, eval_examples=2,
                      student={"model": str(tiny_llama_dir), "layers": None}, lora={"r": 4, "alpha": 8})
    run_dir = trainer.run(cfg)
    assert (run_dir / "model" / "adapter" / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_qlora_student_trains_on_nf4_base_and_saves_an_unquantized_merge(tiny_llama_dir, tiny_data, tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "qlora", max_steps=2, save_every=0,
                      student={"model": str(tiny_llama_dir), "layers": None, "quantization": "nf4"},
                      lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    with pytest.warns(UserWarning, match="slow"):
        run_dir = trainer.run(cfg)
    assert all(r["loss"] > 0 for r in train_rows(run_dir))
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert model.dtype == torch.float32 and not hasattr(model.config, "quantization_config")


def test_wandb_without_the_package_is_a_clear_error(tiny_llama_dir, tiny_data, tmp_path):
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install wandb"):
            trainer.run(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "wb", wandb=True))
    else:
        pytest.skip("wandb is installed")


def test_missing_teacher_gpu_fails_before_any_weights_load(tiny_llama_dir, tiny_data, tmp_path, monkeypatch):
    import distillm_edge.models as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("weights were loaded"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "gpu", teachers=[{"model": str(tiny_llama_dir), "device": "cuda:1"}])
    with pytest.raises(ConfigError, match=r"teachers\[0\].device cuda:1: only 1 CUDA GPU"):
        trainer.run(cfg)


def test_offline_hub_teacher_fails_before_any_weights_load(tiny_llama_dir, tiny_data, tmp_path, monkeypatch):
    import distillm_edge.models as models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("weights were loaded"))
    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "hub", teachers=[{"model": "distillm-test/no-such-model"}])
    with pytest.raises(UserError, match="not in the local Hugging Face cache"):
        trainer.run(cfg)


def test_probe_layers_reports_initial_perplexities(tiny_llama_dir, tiny_data, tmp_path):
    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "probe", eval_examples=2)
    rows = trainer.probe(cfg, ["even:1", "first-last:0,1"])
    assert [(r[0], r[1]) for r in rows] == [("(all layers)", 2), ("even:1", 1), ("first-last:0,1", 1)]
    assert all(math.isfinite(r[2]) and r[2] > 1 for r in rows)
    with pytest.raises(UserError, match="not a layer selection"):
        trainer.probe(cfg, ["middle:3"])


@pytest.mark.slow
def test_tiny_cpu_recipe_end_to_end(tmp_path):
    """The real default recipe (SmolLM2 + Gemma-3 teachers, 15-layer student), a few steps, small eval."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillm_edge.training.config import resolve_config

    cfg = resolve_config("tiny-cpu", overrides={"max_steps": 3, "grad_accum": 2, "eval_examples": 3, "warmup_steps": 1,
                                                "save_every": 2, "progress": False, "out": str(tmp_path / "run"),
                                                "real_eval_examples": 3})
    run_dir = trainer.run(cfg)
    for name in ("config.yaml", "metrics.jsonl", "loss_curve.png", "report.md", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    rows = train_rows(run_dir)
    assert len(rows) == 3 and all(math.isfinite(r["loss"]) for r in rows)
    assert "loss/kd/gemma-3-270m" in rows[0] and "loss/kd/smollm2-135m-instruct" in rows[0]
    ev = json.loads((run_dir / "summary.json").read_text())["evaluation"]
    assert set(ev["teachers"]) == {"smollm2-135m-instruct", "gemma-3-270m"}
    assert ev["teachers"]["smollm2-135m-instruct"]["perplexity"] < 100
    al = ev["teachers"]["gemma-3-270m"]["alignment"]  # measured on the real pair: ~95% aligned, ~94% overlap
    assert al["aligned_share"] > 0.8 and al["vocab_overlap"] > 0.8 and al["teacher_mass_on_shared"] > 0.5
    gen = json.loads((run_dir / "summary.json").read_text())["generalization"]  # medalpaca, when ../shared/data has it
    if gen is not None:
        assert gen["examples"] == 3 and gen["teachers"]["smollm2-135m-instruct"]["same_tokenizer"]
        assert math.isfinite(gen["teachers"]["smollm2-135m-instruct"]["ratio"])
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert model.config.num_hidden_layers == 15
    assert "<|im_start|>" in AutoTokenizer.from_pretrained(run_dir / "model").chat_template
