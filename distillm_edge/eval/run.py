"""``distillm-edge eval``: score a model (and optionally its teacher and undistilled baseline).

Read top to bottom: ``build_tasks`` loads the benchmarks once; each model is opened on its
backend (one at a time, to bound memory), scored on every multiple-choice task
(``scoring.score_task``) and on generation (``generation.evaluate_generation``), then closed;
``report.write_run`` writes ``results.json``, ``report.md``, the charts and per-item samples into
the run directory and the summary table is printed.

Run: ``distillm-edge eval --model smollm2-135m-instruct --data-dir ../shared/data --limit 5``.
Test: ``pytest tests/eval/test_run.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console

from distillm_edge.backends import open_backend
from distillm_edge.errors import UserError
from distillm_edge.eval import mcq_data, metrics, prompts, report
from distillm_edge.eval.config import EvalConfig
from distillm_edge.eval.generation import evaluate_generation, load_instructions
from distillm_edge.eval.scoring import score_task
from distillm_edge.io import sha256_dir, sha256_file
from distillm_edge.models.sources import resolve

console = Console(stderr=True, soft_wrap=True)


def build_tasks(cfg: EvalConfig) -> list[prompts.MCQTask]:
    """The multiple-choice tasks of ``cfg`` with their items (first ``limit``) and examples.

    Each task id names its split (``mmlu_medical_val/anatomy``, ``medqa_dev``, ``pubmedqa_pqal_dev``),
    so one name never covers different items: the local files of ../shared/data are MedQA's dev
    split, MedMCQA's dev (= the Hub's validation) and PubMedQA's labelled non-test half; the Hub's
    copies are MedQA test and all 1,000 labelled PubMedQA items (``pubmedqa_pqal_all``).
    """
    root = Path(cfg.data_dir) if cfg.data_dir else None
    limit = cfg.limit or None
    tasks: list[prompts.MCQTask] = []
    if "mmlu_medical" in cfg.tasks:
        mmlu_root = Path(cfg.mmlu_dir) if cfg.mmlu_dir else (root / "mmlu" if root else None)
        split = mcq_data.resolve_mmlu_split(cfg.split, mmlu_root)
        group = f"mmlu_medical_{split}"
        for subject in mcq_data.MMLU_MEDICAL:
            rows = mcq_data.load_mmlu(subject, split, mmlu_root)
            shots = mcq_data.load_mmlu(subject, "dev", mmlu_root) if cfg.num_fewshot else None
            if shots is not None and len(shots.items) < cfg.num_fewshot:
                raise UserError(f"{shots.source}: {len(shots.items)} examples, fewer than "
                                         f"--num-fewshot {cfg.num_fewshot}.")
            source = rows.source + (f" + {shots.source}" if shots else "")
            digest = rows.sha256 + (f" + {shots.sha256}" if shots else "")
            tasks.append(prompts.MCQTask(f"{group}/{subject}", group, "mmlu", rows.items[:limit],
                                         shots.items[: cfg.num_fewshot] if shots else (),
                                         prompts.mmlu_description(subject), source, digest))
    if "medqa" in cfg.tasks:
        rows = mcq_data.load_medqa(root / "medqa" / "US_4options_dev.jsonl" if root else None)
        name = "medqa_dev" if root else "medqa_test"
        tasks.append(prompts.MCQTask(name, name, "medqa", rows.items[:limit], source=rows.source, sha256=rows.sha256))
    if "medmcqa" in cfg.tasks:
        rows = mcq_data.load_medmcqa(root / "medmcqa" / "dev.jsonl" if root else None)
        tasks.append(prompts.MCQTask("medmcqa_dev", "medmcqa_dev", "medmcqa", rows.items[:limit], source=rows.source,
                                     sha256=rows.sha256))
    if "pubmedqa" in cfg.tasks:
        rows = mcq_data.load_pubmedqa(root / "pubmedqa" / "pqal_dev.json" if root else None)
        base = "pubmedqa_pqal_dev" if root else "pubmedqa_pqal_all"
        for fmt, suffix in (("pubmedqa", ""), ("pubmedqa_no_context", "_no_context")):
            tasks.append(prompts.MCQTask(base + suffix, base + suffix, fmt, rows.items[:limit], source=rows.source,
                                         sha256=rows.sha256))
    return tasks


def model_hash(spec: str, backend) -> str:
    """sha256 of the GGUF file, or of the checkpoint/ONNX directory's weight and config files."""
    path = Path(backend.info.path) if backend.info.path else None
    if path is not None and backend.info.backend == "onnx":  # the graph, its external weights, its config
        return sha256_dir(path.parent if path.is_file() else path, ("*.onnx", "*.onnx.data", "*.data", "*.json"))
    if path is not None and path.is_file():
        return sha256_file(path)
    if path is not None and path.is_dir():
        return sha256_dir(path)
    return ""  # a Hub id: the spec and transformers' cache name the revision


def evaluate_mcq(backend, tasks: list[prompts.MCQTask], cfg: EvalConfig, role: str) -> tuple[dict, dict]:
    """Per-task accuracy and calibration, group aggregates, and per-item samples."""
    per_task, samples, pooled = {}, {}, {}
    for task in tasks:
        started = time.perf_counter()
        scores = score_task(backend, task)
        probs = metrics.choice_probs(scores.loglik)
        correct = 100.0 * (scores.pred == scores.gold)
        acc, se = float(correct.mean()), metrics.mean_stderr(correct)
        entry = {
            "acc": acc, "acc_stderr": se, "acc_ci95": metrics.ci95(acc, se, 0.0, 100.0), "n": len(task.items),
            "ece": metrics.expected_calibration_error(probs, scores.gold, cfg.ece_bins),
            "brier": metrics.brier_score(probs, scores.gold),
            "single_token_items": scores.single_token, "multi_token_items": scores.multi_token,
            "seconds": round(time.perf_counter() - started, 2),
        }
        per_task[task.name] = entry
        pooled.setdefault(task.group, []).append((scores, probs))
        samples[task.name] = [
            {"id": item.id, "gold": int(g), "pred": int(p), "loglik": [round(float(x), 5) for x in ll]}
            for item, g, p, ll in zip(task.items, scores.gold, scores.pred, scores.loglik)
        ]
        console.print(f"{role:<9} {task.name:<38} n={entry['n']:>5}  acc {entry['acc']:6.2f} ± {se:5.2f}  "
                      f"ece {entry['ece']:.3f}  {entry['seconds']:7.1f}s")
    groups = {}
    for group, parts in pooled.items():
        gold = np.concatenate([s.gold for s, _ in parts])
        probs = np.concatenate([p for _, p in parts])
        names = [t.name for t in tasks if t.group == group]
        agg = metrics.aggregate({n: (per_task[n]["acc"], per_task[n]["n"]) for n in names})
        micro_se = metrics.mean_stderr(100.0 * (np.concatenate([s.pred for s, _ in parts]) == gold))
        macro_se = metrics.unweighted_mean_stderr([per_task[n]["acc_stderr"] for n in names])
        groups[group] = {"acc": agg["micro"], "acc_stderr": micro_se, "acc_ci95": metrics.ci95(agg["micro"], micro_se, 0.0, 100.0),
                         "macro_acc": agg["macro"], "macro_acc_stderr": macro_se,
                         "macro_acc_ci95": metrics.ci95(agg["macro"], macro_se, 0.0, 100.0),
                         "micro_acc": agg["micro"], "micro_acc_stderr": micro_se, "n": agg["n"],
                         "ece": metrics.expected_calibration_error(probs, gold, cfg.ece_bins),
                         "brier": metrics.brier_score(probs, gold)}
    return {"tasks": per_task, "groups": groups}, samples


def _backend_options(cfg: EvalConfig) -> dict:
    return {"threads": cfg.threads} if cfg.threads else {}


def run(cfg: EvalConfig) -> dict:
    started = time.time()
    out = Path(cfg.out) if cfg.out else Path("runs") / "eval" / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(cfg.model).name}"
    roles = [("model", cfg.model)] + [(r, s) for r, s in (("teacher", cfg.teacher), ("baseline", cfg.baseline)) if s]
    for _, spec in roles:
        resolve(spec)  # a bad model spec fails before any data is read
    tasks = build_tasks(cfg)
    gen_items, gen_sha = load_instructions(cfg.data, cfg.limit) if "generation" in cfg.tasks else ([], "")
    results, models, samples = {}, {}, {}
    for role, spec in roles:
        backend = open_backend(spec, cfg.backend, **_backend_options(cfg))
        try:
            console.print(f"{role:<9} {spec} on {backend.info.backend} ({backend.info.dtype}, "
                          f"{backend.info.threads} thread(s), loaded in {backend.info.load_seconds:.1f}s)")
            models[role] = {"spec": spec, "backend": backend.info.backend, "path": backend.info.path,
                            "dtype": backend.info.dtype, "threads": backend.info.threads,
                            "sha256": model_hash(spec, backend), "load_seconds": round(backend.info.load_seconds, 2)}
            mcq, mcq_samples = evaluate_mcq(backend, tasks, cfg, role) if tasks else ({"tasks": {}, "groups": {}}, {})
            results[role] = mcq
            samples[role] = mcq_samples
            if gen_items:
                t0 = time.perf_counter()
                gen = evaluate_generation(backend, gen_items, cfg.max_new_tokens, cfg.max_ref_words)
                gen["metrics"]["seconds"] = round(time.perf_counter() - t0, 1)
                results[role]["generation"] = gen["metrics"]
                samples[role]["generation"] = gen["samples"]
                g = gen["metrics"]
                console.print(f"{role:<9} {'generation':<38} n={g['n']:>5}  rougeL {g['rougeL']:6.2f}  "
                              f"bits/byte {g['bits_per_byte']:.3f}  token ppl {g['token_perplexity']:.2f}  {g['seconds']:7.1f}s")
        finally:
            backend.close()
    data = {t.name: {"source": t.source, "sha256": t.sha256, "n": len(t.items), "prompt": prompts.describe(t)}
            for t in tasks}
    if gen_items:
        data["generation"] = {"source": str(cfg.data), "sha256": gen_sha, "n": len(gen_items),
                              "prompt": "chat template, one user turn, greedy decoding"}
    summary = report.write_run(out, cfg, models, data, results, samples, seconds=time.time() - started)
    report.print_summary(summary, console)
    console.print(f"wrote {out}/results.json, report.md and charts")
    return summary
