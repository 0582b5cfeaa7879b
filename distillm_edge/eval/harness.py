"""The reference: the same MMLU-medical tasks run by lm-evaluation-harness, for agreement and speed checks.

``write_mmlu_tasks`` generates one lm-eval YAML task per subject (plus a group) in a directory,
reading the same local CSVs (``dataset_path: csv`` with ``data_files``) with lm-eval's own MMLU
template: description "The following are multiple choice questions (with answers) about ...",
``doc_to_text`` "{{question.strip()}}\\nA. ..\\nAnswer:", choices A-D, few-shot examples from the
dev split (``first_n``). ``run_harness`` runs them through ``lm_eval.simple_evaluate`` with the
``hf`` model (a loaded transformers model, so both sides share one copy) and returns per-subject
accuracy with lm-eval's standard error, the prompts and the choice log-likelihoods.

Not used by ``distillm-edge eval`` itself; ``tests/eval/test_harness_agreement.py`` and
``benchmarks/eval_speed.py`` call it. lm-eval needs ``HF_HUB_OFFLINE=1`` here (no Hub access).

Test: ``pytest tests/eval/test_harness_agreement.py -m slow``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from distillm_edge.eval.mcq_data import MMLU_MEDICAL, mmlu_file
from distillm_edge.eval.prompts import mmlu_description

TASK_PREFIX = "distillm_mmlu_"


def write_mmlu_tasks(mmlu_dir: str | Path, out_dir: str | Path, split: str = "val",
                     subjects: tuple[str, ...] = MMLU_MEDICAL) -> list[str]:
    """Write lm-eval YAML task configs for ``subjects`` into ``out_dir``; return the task names."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for subject in subjects:
        name = f"{TASK_PREFIX}{subject}"
        config = {
            "task": name,
            "dataset_path": "csv",
            "dataset_kwargs": {
                "data_files": {"eval": str(mmlu_file(mmlu_dir, subject, split).resolve()),
                               "fewshot": str(mmlu_file(mmlu_dir, subject, "dev").resolve())},
                "column_names": ["question", "A", "B", "C", "D", "answer"],
                # keep "None", "NA", "" as text, as our csv reader does (pandas would make them NaN)
                "keep_default_na": False, "na_filter": False,
            },
            "test_split": "eval",
            "fewshot_split": "fewshot",
            "fewshot_config": {"sampler": "first_n"},
            "output_type": "multiple_choice",
            "description": mmlu_description(subject),
            "doc_to_text": "{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer.strip())}}",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0},
        }
        (out_dir / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        names.append(name)
    return names


def run_harness(model, tokenizer, task_dir: str | Path, tasks: list[str], num_fewshot: int = 0,
                limit: int | None = None, batch_size: int = 8) -> dict[str, dict]:
    """Run lm-eval on ``tasks``; return {subject: {"acc", "n", "prompts", "loglik"}}."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    out = lm_eval.simple_evaluate(
        model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, log_samples=True,
        task_manager=TaskManager(include_path=str(task_dir)), random_seed=0, numpy_random_seed=0,
        torch_random_seed=0, fewshot_random_seed=0,
        bootstrap_iters=1,  # > 0 turns stderrs on; acc's is closed form (mean_stderr), no resampling
    )
    results = {}
    for name in tasks:
        samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
        results[name[len(TASK_PREFIX):]] = {
            "acc": 100.0 * out["results"][name]["acc,none"],
            "acc_stderr": 100.0 * out["results"][name]["acc_stderr,none"],
            "n": len(samples),
            "prompts": [s["arguments"][0][0] for s in samples],  # in memory: [(context, continuation), ...]
            "loglik": [[float(r[0]) for r in s["filtered_resps"]] for s in samples],
        }
    return results
