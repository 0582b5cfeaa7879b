"""``distillm-edge train --ablation [--recipe NAME]``: the research's ablation ladder and divergences, one run each.

Every variant is the chosen recipe (with its overrides, e.g. ``max_steps=20``) changed in one
cumulative step, trained by the normal trainer into ``<out>/NN-<variant>/``, and scored on the
same held-out examples (``eval_examples`` > 0 is required):

1. ``baseline KD``: constant temperature τ = 2 (Hinton et al.), no specialty weighting, no attention term;
2. ``+ progressive temperature``: the recipe's temperature schedule (progressive 8 → 1 if the recipe's is constant);
3. ``+ specialty weighting``: ``specialty_weights: inverse_frequency``;
4. ``+ attention alignment``: attention-map MSE (weight 0.1, head-averaged) between the student's
   layer 0 and its mapped layer of teacher 0 (the recipe's own ``attention`` section if it has one);
5. the divergences on the full ladder: forward KL (= row 4, not re-run), reverse KL, JSD (β = the
   recipe's ``jsd_beta``), skew KL (α = the recipe's ``skew``).

The table (held-out student perplexity, KL to each teacher, log-space gap closed to teacher 0) is
printed and written to ``<out>/ablation.md`` and ``<out>/ablation.json``. Teachers run online in
every variant (the teacher-logit cache is not wired into the trainer yet).

Test: ``pytest tests/training/test_integration_ablation.py`` (tiny models).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from distillm_edge.config import ConfigError
from distillm_edge.io import atomic_write_json, atomic_write_text, ensure_dir
from distillm_edge.training.config import AttentionConfig, TemperatureConfig, TrainConfig

DIVERGENCE_ROWS = (("reverse KL", "reverse_kl"), ("JSD", "jsd"), ("skew KL", "skew_kl"))


def variants(cfg: TrainConfig) -> list[tuple[str, TrainConfig]]:
    """(name, config) of every ablation row, in table order (without run directories)."""
    replace = dataclasses.replace
    progressive = cfg.temperature if cfg.temperature.schedule != "constant" else TemperatureConfig()
    attention = cfg.attention if cfg.attention.weight > 0 else AttentionConfig(weight=0.1, teacher=0, layers=(0,))
    base = replace(cfg, temperature=TemperatureConfig(schedule="constant", initial=2.0, floor=2.0), specialty_weights=None,
                   attention=AttentionConfig(), divergence="forward_kl")
    ladder = [("baseline KD", base)]
    ladder.append(("+ progressive temperature", replace(ladder[-1][1], temperature=progressive)))
    ladder.append(("+ specialty weighting", replace(ladder[-1][1], specialty_weights="inverse_frequency")))
    ladder.append(("+ attention alignment", replace(ladder[-1][1], attention=attention)))
    top = ladder[-1][1]
    return ladder + [(f"ladder, {label}", replace(top, divergence=kind)) for label, kind in DIVERGENCE_ROWS]


def run(cfg: TrainConfig) -> Path:
    """Train every variant; print and save the table. Returns the ablation directory."""
    from distillm_edge.training import trainer

    if not cfg.teachers or cfg.kd_weight == 0:
        raise ConfigError("--ablation compares distillation settings: it needs teachers and kd_weight > 0.")
    if cfg.eval_examples < 1:
        raise ConfigError("--ablation scores each variant on held-out examples: set eval_examples >= 1.")
    root = ensure_dir(Path(cfg.out or f"runs/ablation-{time.strftime('%Y%m%d-%H%M%S')}").expanduser())
    rows = []
    for i, (name, vcfg) in enumerate(variants(cfg)):
        slug = name.replace("+ ", "").replace(", ", "-").replace(" ", "-").lower()
        out = root / f"{i + 1:02d}-{slug}"
        run_dir = trainer.run(dataclasses.replace(vcfg, out=str(out)))
        summ = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["evaluation"]
        if summ is None:
            raise ConfigError(f"{run_dir}: no held-out evaluation (the data has no 'valid' split); --ablation needs one.")
        rows.append({"variant": name, "run_dir": str(run_dir), "perplexity": summ["student_perplexity"]["after"],
                     "kl": {t: v["kl_after"] for t, v in summ["teachers"].items()},
                     "gap_closed": next(iter(summ["teachers"].values()))["gap_closed_log"]})
    table = format_table(rows)
    atomic_write_text(root / "ablation.md", f"# Ablation ({cfg.description or 'recipe'})\n\n{table}\n")
    atomic_write_json(root / "ablation.json", {"rows": rows})
    print(table, flush=True)
    return root


def format_table(rows: list[dict]) -> str:
    teachers = list(rows[0]["kl"])
    head = ["variant", "held-out ppl"] + [f"KL({t})" for t in teachers] + [f"gap closed ({teachers[0]})"]
    body = [[r["variant"], f"{r['perplexity']:.2f}"] + [f"{r['kl'][t]:.3f}" for t in teachers]
            + [f"{100 * r['gap_closed']:.1f}%"] for r in rows]
    return text_table(head, body)


def text_table(head: list[str], body: list[list[str]]) -> str:
    """A fixed-width markdown table (also the staged runner's, ``staged.py``)."""
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])
