"""``gradient_checkpointing: true`` gives the gradients of the same step without it.

Found on a lent H200 (``benchmarks/gpu_check.py``, case ``qlora-ckpt``): QLoRA with checkpointing
stopped at the first backward with ``CheckpointError: A different number of tensors was saved during
the original forward and recomputation``. The recomputation runs in backward, outside the context
managers the step's forward runs under, so anything such a context switches (the packed-row
per-example attention, the frozen Linears' pre-cast bf16 weights) must stay switched for it. These
CPU stand-ins take one step with and without checkpointing and compare the student's gradients:
packed rows (full fine-tuning), and LoRA on an fp32 base under bf16 autocast (frozen base Linears).

Run: ``pytest tests/training/test_checkpointing.py``.
"""

from __future__ import annotations

import pytest
import torch
from test_step import step_grads
from tinyrun import tiny_config

CASES = {
    "packed-full": {"packing": True, "max_tokens_per_batch": 4096, "grad_accum": 1},
    "lora-bf16-autocast": {"lora": {"r": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "gate_proj"]},
                           "precision": "bf16", "grad_accum": 2},
    "lora-bf16-packed": {"lora": {"r": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "gate_proj"]},
                         "precision": "bf16", "packing": True, "max_tokens_per_batch": 4096, "grad_accum": 1},
}


@pytest.mark.parametrize("case", list(CASES))
def test_checkpointing_gives_the_same_gradients(tiny_llama_dir, tiny_data, tmp_path, case):
    changes = {"student": {"model": str(tiny_llama_dir), "layers": None}, **CASES[case]}
    plan = [[0, 1, 2, 3]] if changes.get("packing") else [[0], [1]]  # one packed row, or two micro-batches
    plain = step_grads(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "plain", **changes), plan)
    ckpt = step_grads(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "ckpt", gradient_checkpointing=True,
                                  **changes), plan)
    assert plain.keys() == ckpt.keys() and plain
    tol = {"rtol": 2e-2, "atol": 1e-4} if changes.get("precision") == "bf16" else {"rtol": 1e-4, "atol": 1e-7}
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], msg=name, **tol)


def test_packed_rows_attend_per_example_only_on_the_cpu_without_checkpointing(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    from distillm_edge.training.packed_attention import per_example_pays

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="sdpa")
    assert per_example_pays(model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert not per_example_pays(model)
    assert not per_example_pays(AutoModelForCausalLM.from_config(model.config).to("meta"))  # a GPU stand-in
