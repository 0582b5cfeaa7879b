"""The trainer logs model-FLOPs utilization per step (``training/mfu.py`` counts, peak measured at start-up).

Run: ``pytest tests/training/test_integration_mfu.py`` (tiny random models, seconds).
"""

from __future__ import annotations

import math

import pytest
from tinyrun import tiny_config, train_rows

from distillm_edge.training import trainer
from distillm_edge.training.batches import collate, encode_records
from distillm_edge.training.mfu import ModelShape, sequence_flops
from distillm_edge.training.step import step_flops


def test_step_flops_counts_no_padding_and_adds_each_teachers_forward(tiny_llama_dir, smollm2_tokenizer):
    from transformers import AutoConfig

    shape = ModelShape.from_config(AutoConfig.from_pretrained(tiny_llama_dir))
    records = [{"instruction": "What is anemia?", "input": "", "response": "Too few red cells."},
               {"instruction": "Name the largest artery of the human body, please.", "input": "",
                "response": "The aorta, which leaves the left ventricle and carries oxygenated blood to the body."}]
    examples, _ = encode_records(records, smollm2_tokenizer, {}, 96)
    pad = smollm2_tokenizer.pad_token_id or 0
    both = collate(examples, pad, {})
    assert both.attention_mask.sum() < both.attention_mask.numel()  # the short row is padded
    singles = [collate([e], pad, {}) for e in examples]
    naive = sum(sequence_flops(shape, len(e.student.ids), head_rows=sum(e.student.counted[1:])) +
                sequence_flops(shape, len(e.student.ids), head_rows=sum(e.student.counted[1:]), train=False)
                for e in examples)
    got = step_flops([both], shape, {0: shape}, {0: True})
    assert got == pytest.approx(naive, rel=1e-9)
    assert step_flops(singles, shape, {0: shape}, {0: True}) == pytest.approx(got, rel=1e-9)
    assert step_flops([both], shape, {}, {}) < got  # the teacher's forward counts


def test_trainer_logs_mfu_every_step(tiny_llama_dir, tiny_data, tmp_path, capsys):
    run_dir = trainer.run(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "run", max_steps=2))
    rows = train_rows(run_dir)
    assert len(rows) == 2 and all(math.isfinite(r["mfu"]) and 0 < r["mfu"] for r in rows)
    err = capsys.readouterr().err
    assert "MFU peak:" in err and "| MFU " in err
