"""Helpers shared by the training tests (not a test module): a tiny run config and its logged rows.

Imported as ``from tinyrun import tiny_config, train_rows`` (pytest puts ``tests/training`` on sys.path).
"""

from __future__ import annotations

import json
from pathlib import Path

from distillm_edge.config import from_mapping
from distillm_edge.training.config import TrainConfig


def tiny_config(tiny_llama_dir, tiny_data, out, **changes) -> TrainConfig:
    """A 1-layer student cut from the tiny Llama, taught by it, 6 steps of 2 micro-batches, no eval."""
    data = {
        "teachers": [{"model": str(tiny_llama_dir), "weight": 1.0}],
        "student": {"model": str(tiny_llama_dir), "layers": "even:1"},
        "data": str(tiny_data), "max_length": 96, "eval_examples": 0, "max_steps": 6, "grad_accum": 2,
        "lr": 3e-3, "warmup_steps": 1, "freeze_embeddings": False, "save_every": 3, "progress": False,
        "tensorboard": False, "out": str(out), "threads": 1,
        "precision": "fp32",  # exact comparisons; "auto" is bf16 on a CPU with native bf16
    }
    data.update(changes)
    return from_mapping(TrainConfig, data)


def train_rows(run_dir: Path) -> list[dict]:
    """The ``train`` rows of a run's metrics.jsonl."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines if json.loads(x)["kind"] == "train"]
