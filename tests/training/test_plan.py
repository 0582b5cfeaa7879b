"""Tests for the memory planner (``distillm_edge/training/plan.py``, ``distillm-edge train --plan``).

Parameter counts are checked against real (tiny) models, the NF4/int8 weight bytes against
bitsandbytes-quantized models on the CPU, the activation formula against the tensors autograd
actually saves, and the research recipes plan offline from the shipped architecture files.

Run: ``pytest tests/training/test_plan.py``.
"""

from __future__ import annotations

import json

import pytest
import torch

from distillm_edge.errors import UserError
from distillm_edge.training import plan
from distillm_edge.training.config import list_recipes, resolve_config

GiB = plan.GiB


def tiny_llama_config(**kw):
    from transformers import LlamaConfig

    base = dict(hidden_size=128, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                num_hidden_layers=3, vocab_size=256, tie_word_embeddings=True)
    return LlamaConfig(**(base | kw))


def test_counts_are_exact_for_a_real_model_and_a_layer_cut():
    from transformers import AutoModelForCausalLM

    config = tiny_llama_config(tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(config)
    c = plan.count_model(config)
    assert c.params == sum(p.numel() for p in model.parameters())
    assert c.head == model.lm_head.weight.numel() and c.embedding == model.model.embed_tokens.weight.numel()
    linear = sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head")
    assert c.linear == linear
    cut = plan.count_model(config, layers=[0, 2])
    per_layer = (c.params - c.embedding - c.head - config.hidden_size) // 3
    assert cut.params == c.params - per_layer and cut.layers == 2


def test_nested_gemma3_multimodal_config_uses_its_text_config():
    from transformers import Gemma3Config

    config = Gemma3Config(
        text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 300},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 28, "patch_size": 14},
        mm_tokens_per_image=4)
    assert not hasattr(config, "vocab_size") or config.get_text_config().vocab_size == 300
    c = plan.count_model(config)
    assert (c.vocab, c.hidden, c.layers, c.model_type) == (300, 64, 2, "gemma3_text")
    assert c.vision > 0 and c.params > c.vision + c.embedding


def test_research_models_plan_offline_from_the_shipped_architectures(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    counts = plan.model_counts(resolve_config("multi-teacher"))
    # the public parameter counts of these checkpoints
    assert counts["meta-llama/Llama-3.2-1B" if "meta-llama/Llama-3.2-1B" in counts else "student"].params == 1_235_814_400
    assert counts["m42-health/Llama3-Med42-8B"].params == 8_030_261_248
    gemma = counts["google/medgemma-4b-it"]
    assert gemma.vocab == 262_208 and gemma.layers == 34 and 4.2e9 < gemma.params < 4.4e9 and gemma.vision > 4e8


def test_every_shipped_recipe_gets_a_plan_and_a_verdict(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from distillm_edge.config import load_yaml
    from distillm_edge.training import staged
    from distillm_edge.training.config import recipe_path

    for name, _ in list_recipes():
        # a staged recipe: its first stage (later stages start from models that stage 1 has not written yet)
        cfg = staged.resolve(name).stages[0] if "stages" in load_yaml(recipe_path(name)) else resolve_config(name)
        counts = plan.model_counts(cfg)
        for gpus in (0, 1, 2):
            p, message = plan.verdict(cfg, counts, plan.baseline_setup(cfg, gpus, 24 * GiB))
            assert message.startswith("fits" if p.fits else "does not fit"), (name, gpus, message)
            assert all(d.total > 0 for d in p.devices)


def test_unknown_hub_model_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(UserError, match="huggingface-cli download some-org/no-such-model"):
        plan.load_config("some-org/no-such-model")


def test_nf4_and_int8_weight_bytes_match_bitsandbytes_on_cpu(tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = tiny_llama_config(hidden_size=256, intermediate_size=1024, tie_word_embeddings=False, vocab_size=512)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(tmp_path)
    c = plan.count_model(config)
    modes = {"nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                       bnb_4bit_compute_dtype=torch.bfloat16),
             "int8": BitsAndBytesConfig(load_in_8bit=True)}
    for mode, qc in modes.items():
        model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, quantization_config=qc,
                                                     device_map={"": "cpu"})
        real = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
        for p in model.parameters():  # NF4 block scales (and their own scales) live beside the packed weight
            qs = getattr(p, "quant_state", None)
            if qs is not None:
                real += qs.absmax.numel() * qs.absmax.element_size()
                if qs.state2 is not None:
                    real += qs.state2.absmax.numel() * qs.state2.absmax.element_size()
            scb = getattr(p, "SCB", None)
            if scb is not None:
                real += scb.numel() * scb.element_size()
        estimate = plan.teacher_weight_bytes(c, "bfloat16", mode)
        assert abs(estimate - real) / real < 0.02, (mode, estimate, real)
        assert estimate < 0.6 * plan.teacher_weight_bytes(c, "bfloat16", "none")


@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("eager", [False, True])
def test_activation_formula_matches_the_tensors_autograd_saves(amp, eager):
    """Bytes of every non-parameter tensor the decoder saves for backward vs the formula (within 15%)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_llama_config()
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager" if eager else "sdpa").train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, config.vocab_size, (2, 64))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        model.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=eager or None)
    c = plan.count_model(config)
    estimate = plan.student_activations(c, 2, 64, compute=2 if amp else 4, residual=4, autocast_casts=amp, eager=eager,
                                        checkpointing=False)
    estimate += c.linear * 2 if amp else 0  # the bf16 weight copies autocast makes (a separate plan line)
    measured = sum(saved.values())
    assert abs(estimate - measured) / measured < 0.15, (estimate, measured)
    ckpt = plan.student_activations(c, 2, 64, compute=4, residual=4, autocast_casts=False, eager=eager, checkpointing=True)
    assert ckpt < estimate


def test_verdict_names_the_change_that_fits_and_refuse_raises_the_same_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = resolve_config("multi-teacher")
    counts = plan.model_counts(cfg)
    p, message = plan.verdict(cfg, counts, plan.baseline_setup(cfg, 2, 24 * GiB))
    assert not p.fits and [d.name for d in p.devices] == ["cuda:0", "cuda:1"]
    assert "adamw_8bit" in message and "LoRA" in message
    assert sum(b for label, b in p.devices[1].lines if "weights (nf4)" in label) > 7 * GiB  # both teachers on GPU 1
    big, fits = plan.verdict(cfg, counts, plan.baseline_setup(cfg, 2, 80 * GiB))
    assert big.fits and fits.startswith("fits")
    monkeypatch.setattr(plan, "local_devices", lambda: (2, 24 * GiB))
    with pytest.raises(UserError) as err:
        plan.refuse_if_unfit(cfg)
    assert message in str(err.value)
    monkeypatch.setattr(plan, "local_devices", lambda: (2, 80 * GiB))
    plan.refuse_if_unfit(cfg)


def test_the_knobs_move_the_estimate_the_right_way(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = resolve_config("med42-llama")
    counts = plan.model_counts(cfg)
    base = plan.Setup(gpus=1, memory=24 * GiB)
    total = plan.estimate(cfg, counts, base).devices[0].total

    def with_(**kw):
        import dataclasses

        return plan.estimate(cfg, counts, dataclasses.replace(base, **kw)).devices[0].total

    assert with_(checkpointing=True) < total
    assert total - with_(optimizer="adamw_8bit") == pytest.approx(counts["student"].params * 6 * 1.1, rel=0.01)
    assert with_(lora_r=16) < total / 2
    assert with_(max_length=256) < total
    assert plan.estimate(cfg, counts, plan.Setup(gpus=2, memory=24 * GiB, engine="zero3")).devices[0].total < total


def test_parse_size():
    assert plan.parse_size("24GiB") == 24 * GiB
    assert plan.parse_size("80GB") == 80 * 10**9
    assert plan.parse_size("16g") == 16 * GiB
    with pytest.raises(UserError, match="--gpu-mem"):
        plan.parse_size("lots")


def test_cli_plan_prints_per_device_and_loads_no_weights(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from distillm_edge.cli import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import transformers

    def no_weights(*a, **k):
        raise AssertionError("--plan must not load weights")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    result = CliRunner().invoke(app, ["train", "--plan", "--recipe", "med42-llama", "--gpus", "1", "--gpu-mem", "24GiB"])
    assert result.exit_code == 0, result.output
    assert "teacher Llama3-Med42-8B weights (nf4)" in result.output and "does not fit" in result.output
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(json.dumps({"max_length": 128}))
    result = CliRunner().invoke(app, ["train", "--plan", "--config", str(cfg_file), "--gpus", "0", "--gpu-mem", "24GiB"])
    assert result.exit_code == 0 and "fits" in result.output and "cpu" in result.output


def test_refuse_skips_with_a_warning_when_a_config_cannot_be_read(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    cfg = resolve_config("tiny-cpu", overrides={"teachers": [{"model": "some-org/not-cached"}]})
    with pytest.warns(UserWarning, match="memory plan skipped"):
        plan.refuse_if_unfit(cfg)


def test_a_cpu_run_plans_against_ram(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = resolve_config("tiny-cpu")
    p, message = plan.verdict(cfg, plan.model_counts(cfg), plan.baseline_setup(cfg, 0, 24 * GiB))
    assert p.fits and [d.name for d in p.devices] == ["cpu"] and "on RAM" in message
    assert not any("CUDA" in label for label, _ in p.devices[0].lines)
    tight, refused = plan.verdict(cfg, plan.model_counts(cfg), plan.baseline_setup(cfg, 0, 1 * GiB))
    assert not tight.fits and "does not fit" in refused


def test_trainer_refuses_a_run_that_cannot_fit_before_loading_weights(monkeypatch, tmp_path, tiny_llama_dir, tiny_data):
    import distillm_edge.models as models
    from distillm_edge.training import trainer

    def no_weights(*a, **k):
        raise AssertionError("weights loaded before the memory check")

    monkeypatch.setattr(models, "load_model", no_weights)
    cfg = resolve_config("tiny-cpu", overrides={
        "teachers": [{"model": str(tiny_llama_dir)}], "student": {"model": str(tiny_llama_dir), "layers": None},
        "data": str(tiny_data), "out": str(tmp_path / "run"), "max_steps": 1, "progress": False, "tensorboard": False})
    monkeypatch.setattr(plan, "local_devices", lambda: (0, 1 << 20))  # a 1 MiB machine
    _, message = plan.verdict(cfg, plan.model_counts(cfg), plan.baseline_setup(cfg, 0, 1 << 20))
    with pytest.raises(UserError) as err:
        trainer.run(cfg)
    assert message in str(err.value) and "does not fit" in message
