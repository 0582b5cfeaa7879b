"""The planner's adapter estimates against peaks measured on a GPU (a lent H200, 2026-11-30).

``benchmarks/gpu_check.py`` trained a random model of Llama-3.2-1B's shape (128,256-token head,
tied) at 1,024-token packed rows under bf16 autocast and read ``torch.cuda.max_memory_allocated``
(after the step's peak; the CUDA context is outside it, so the planner's reserve line is left out):

| case | peak GiB | planner then |
|---|---|---|
| QLoRA r=16 on all 7 projections, dropout 0.05 | 5.968 | 3.771 (-37%) |
| the same at 512 tokens | 3.960 | 2.615 (-34%) |
| the same, dropout 0 | 5.390 | 3.771 (-30%) |
| LoRA on a bf16 base | 5.356 | 5.116 (-4%) |

QLoRA was under-planned by a third: peft's ``prepare_model_for_kbit_training`` upcasts the
weights bitsandbytes leaves alone (the 128k x 2048 embedding and head) to fp32, the residual stream
then runs in fp32, the trainer keeps a bf16 copy of that fp32 head, and each adapter saves a bf16
cast of its fp32 input (and a dropout mask). These figures are constants here, so CI checks the
planner against them without a GPU; the full-fine-tuning cases measured in the same run (the
research recipe's shape: 30.39 GiB vs 30.11 planned) are in the README.

Run: ``pytest tests/training/test_plan_measured_gpu.py``.
"""

from __future__ import annotations

import pytest

from distillm_edge.training import plan
from distillm_edge.training.config import resolve_config

GiB = plan.GiB
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MEASURED = {  # case -> (overrides, peak GiB)
    "qlora-1024": ({}, 5.968),
    "qlora-512": ({"max_length": 512, "max_tokens_per_batch": 512}, 3.960),
    "qlora-no-dropout": ({"lora": {"r": 16, "dropout": 0.0, "target_modules": ALL}}, 5.390),
    "lora-bf16-base": ({"student": {"model": "meta-llama/Llama-3.2-1B", "layers": None, "dtype": "bfloat16",
                                    "quantization": "none"}}, 5.356),
}


def config(**changes):
    base = {"teachers": [], "kd_weight": 0.0, "precision": "bf16", "packing": True, "max_length": 1024,
            "max_tokens_per_batch": 1024, "batch_size": 1, "grad_accum": 2, "real_eval": None,
            "student": {"model": "meta-llama/Llama-3.2-1B", "layers": None, "dtype": "bfloat16",
                        "quantization": "nf4"},
            "lora": {"r": 16, "dropout": 0.05, "target_modules": ALL}}
    return resolve_config("tiny-cpu", overrides=base | changes)


@pytest.mark.parametrize("case", list(MEASURED))
def test_adapter_plans_are_within_ten_percent_of_the_h200_peaks(case):
    changes, peak = MEASURED[case]
    cfg = config(**changes)
    device = plan.estimate(cfg, plan.model_counts(cfg), plan.Setup(gpus=1, memory=141 * GiB)).devices[0]
    planned = sum(b for label, b in device.lines if "CUDA context" not in label) / GiB
    assert planned == pytest.approx(peak, rel=0.10), "\n".join(f"{label}: {b / GiB:.3f}" for label, b in device.lines)


def test_qlora_counts_the_upcast_fp32_embedding_once():
    cfg = config()
    counts = plan.model_counts(cfg)
    lines = dict(plan.estimate(cfg, counts, plan.Setup(gpus=1)).devices[0].lines)
    weights = next(b for label, b in lines.items() if label.startswith("student weights"))
    s = counts["student"]
    nf4 = s.linear * (0.5 + 1 / 64 + 4 / (64 * 256))
    assert weights == pytest.approx(nf4 + (s.params - s.linear) * 4)  # tied: the 128k x 2048 table once
