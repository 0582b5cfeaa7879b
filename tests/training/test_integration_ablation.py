"""``distillm-edge train --ablation`` on tiny models: every ladder rung and divergence trains and is scored; the
teacher is cached once over exactly the records the variants use, and read by every rung that needs no live teacher.

Run: ``pytest tests/training/test_integration_ablation.py`` (tiny random models, ~1 min).
"""

from __future__ import annotations

import json
import math

import yaml
from tinyrun import tiny_config, train_rows

from distillm_edge.training import ablation


def test_ablation_runner_trains_each_variant_and_prints_the_table(tiny_llama_dir, tiny_data, tmp_path, capsys):
    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "abl", max_steps=2, eval_examples=2, save_every=0)
    root = ablation.run(cfg, top_k=32)
    saved = json.loads((root / "ablation.json").read_text(encoding="utf-8"))
    rows = saved["rows"]
    cache = saved["caches"]["0"]
    assert cache["records"] == 2 * 2 + 2  # max_steps x grad_accum training records + the 2 held-out ones, no more
    assert [r["teachers"] for r in rows] == ["all cached"] * 3 + [f"{tiny_llama_dir.name} online"] * 4
    assert [r["variant"] for r in rows] == ["baseline KD", "+ progressive temperature", "+ specialty weighting",
                                            "+ attention alignment", "ladder, reverse KL", "ladder, JSD", "ladder, skew KL"]
    assert all(math.isfinite(r["perplexity"]) and all(math.isfinite(v) for v in r["kl"].values()) for r in rows)
    configs = [yaml.safe_load(open(f"{r['run_dir']}/config.yaml", encoding="utf-8")) for r in rows]
    assert configs[0]["temperature"]["schedule"] == "constant" and configs[1]["temperature"]["schedule"] == "progressive"
    assert configs[1]["specialty_weights"] is None and configs[2]["specialty_weights"] == "inverse_frequency"
    assert configs[2]["attention"]["weight"] == 0 and configs[3]["attention"]["weight"] > 0
    assert [c["divergence"] for c in configs[3:]] == ["forward_kl", "reverse_kl", "jsd", "skew_kl"]
    assert [c["teachers"][0]["cache"] for c in configs] == [cache["path"]] * 3 + [None] * 4  # attention: live teacher
    for r in rows[:3]:  # the cached rungs scored the teacher from its cache
        summary = json.loads(open(f"{r['run_dir']}/summary.json", encoding="utf-8").read())
        assert r["kl"][tiny_llama_dir.name] >= 0 and summary["evaluation"]["teachers"][tiny_llama_dir.name]["perplexity"] > 1
    assert "loss/attention" in train_rows(rows[3]["run_dir"])[0]  # the attention term really ran
    kd = [train_rows(r["run_dir"])[0]["loss/kd"] for r in rows[3:]]
    assert len({round(x, 6) for x in kd}) == 4  # each divergence is a different objective
    out = capsys.readouterr().out
    assert "| variant" in out and "ladder, skew KL" in out and (root / "ablation.md").is_file()
    assert "mass outside the top-k" in out and "progressive temperature' rung" in out
