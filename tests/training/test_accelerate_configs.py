"""The shipped accelerate launch configs (``configs/accelerate/*.yaml``) load with accelerate's own
config loader and say what their names promise (processes, engine, ZeRO stage, FSDP sharding, nodes).

Run: ``pytest tests/training/test_accelerate_configs.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
EXPECTED = {  # file: (distributed_type, num_processes, num_machines)
    "ddp-2gpu.yaml": ("MULTI_GPU", 2, 1),
    "split-2gpu.yaml": ("NO", 1, 1),
    "fsdp.yaml": ("FSDP", 2, 1),
    "zero2.yaml": ("DEEPSPEED", 2, 1),
    "zero3.yaml": ("DEEPSPEED", 2, 1),
    "two-node.yaml": ("MULTI_GPU", 4, 2),
}


def load(name: str):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(CONFIGS / name))


def test_every_shipped_config_is_expected():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerate(name):
    cfg = load(name)
    kind, processes, machines = EXPECTED[name]
    assert str(cfg.distributed_type).split(".")[-1] == kind
    assert (cfg.num_processes, cfg.num_machines) == (processes, machines)
    assert cfg.mixed_precision == "bf16" and not cfg.use_cpu


def test_engine_specific_fields():
    assert load("zero2.yaml").deepspeed_config["zero_stage"] == 2
    zero3 = load("zero3.yaml").deepspeed_config
    assert zero3["zero_stage"] == 3 and zero3["zero3_init_flag"] is True
    # DeepSpeed counts micro-batches itself: it must match the research recipes' grad_accum
    from distillm_edge.training.config import resolve_config

    assert zero3["gradient_accumulation_steps"] == resolve_config("med42-llama").grad_accum
    fsdp = load("fsdp.yaml").fsdp_config
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD" and fsdp["fsdp_use_orig_params"] is True
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    two = load("two-node.yaml")
    assert two.main_process_ip and two.main_process_port == 29500 and two.machine_rank == 0
    assert str(load("split-2gpu.yaml").gpu_ids) == "0,1"
