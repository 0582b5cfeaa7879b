"""Write an eval run directory and print its summary.

The run directory holds everything needed to reproduce or audit a result:

- ``config.yaml``: the resolved ``EvalConfig``;
- ``results.json``: every metric per model role (model / teacher / baseline), retention
  (student / teacher, inverted for lower-is-better metrics) and improvement over the baseline,
  plus a manifest: model specs, backends and sha256 hashes, data sources and hashes, the prompt
  format of each task, seed, library versions, wall time;
- ``report.md``: the summary and per-subject tables (the tables the research reports);
- ``mmlu_medical.png`` (per-subject accuracy, one bar per model) and ``benchmarks.png``;
- ``samples/<role>.<task>.jsonl``: per-item log-likelihoods / generations.

Every file is written atomically.

Test: ``pytest tests/eval/test_run.py`` (writes and checks a run directory).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from distillm_edge.config import save_yaml, to_dict
from distillm_edge.eval import metrics
from distillm_edge.io import atomic_path, atomic_write_json, atomic_write_text, ensure_dir

GEN_METRICS = ("rouge1", "rouge2", "rougeL", "bleu1", "bleu4", "perplexity", "next_token_accuracy")
ROLE_TITLES = {"model": "model", "teacher": "teacher", "baseline": "baseline"}


def flatten(result: dict) -> dict[str, float]:
    """One role's results as ``{"<task or group> <metric>": value}`` rows for the summary table."""
    rows: dict[str, float] = {}
    for group, g in result.get("groups", {}).items():
        if group == "mmlu_medical":
            rows[f"{group} macro acc"] = g["macro_acc"]
            rows[f"{group} micro acc"] = g["micro_acc"]
        else:
            rows[f"{group} acc"] = g["acc"]
        rows[f"{group} ece"] = g["ece"]
        rows[f"{group} brier"] = g["brier"]
    for key in GEN_METRICS:
        if key in result.get("generation", {}):
            rows[f"generation {key}"] = result["generation"][key]
    return rows


def _kind(row: str) -> str:
    return row.split()[-1]


def compare(results: dict) -> tuple[dict, dict]:
    """Retention (vs teacher) and improvement (vs baseline) of every summary row and task accuracy."""
    student = {**flatten(results["model"]), **{f"{t} acc": v["acc"] for t, v in results["model"]["tasks"].items()}}
    retention, improvement = {}, {}
    for role, out, fn in (("teacher", retention, metrics.retention), ("baseline", improvement, metrics.improvement)):
        if role not in results:
            continue
        other = {**flatten(results[role]), **{f"{t} acc": v["acc"] for t, v in results[role]["tasks"].items()}}
        for row, value in student.items():
            out[row] = fn(_kind(row), value, other.get(row))
    return retention, improvement


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def summary_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    results = summary["results"]
    roles = list(results)
    headers = ["metric", *roles]
    if "teacher" in results:
        headers.append("retention")
    if "baseline" in results:
        headers.append("improvement")
    flat = {r: flatten(results[r]) for r in roles}
    rows = []
    for row in flat["model"]:
        digits = 3 if _kind(row) in ("ece", "brier") else 2
        line = [row, *(_fmt(flat[r].get(row), digits) for r in roles)]
        if "teacher" in results:
            line.append(_fmt(summary["retention"].get(row), 3))
        if "baseline" in results:
            line.append(_fmt(summary["improvement"].get(row), digits))
        rows.append(line)
    return headers, rows


def subject_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    results = summary["results"]
    roles = list(results)
    headers = ["task", "n", *(f"{r} acc" for r in roles)]
    if "teacher" in results:
        headers.append("retention")
    rows = []
    for task, entry in results["model"]["tasks"].items():
        line = [task, str(entry["n"]), *(_fmt(results[r]["tasks"][task]["acc"]) for r in roles)]
        if "teacher" in results:
            line.append(_fmt(summary["retention"].get(f"{task} acc"), 3))
        rows.append(line)
    return headers, rows


def render_markdown(summary: dict) -> str:
    m = summary["manifest"]
    lines = ["# distillm-edge eval", ""]
    for role, info in m["models"].items():
        lines.append(f"- **{role}**: `{info['spec']}` on {info['backend']} ({info['dtype']}), "
                     f"sha256 `{info['sha256'][:16] or 'n/a'}`")
    cfg = m["config"]
    lines += [f"- split `{cfg['split']}`, {cfg['num_fewshot']}-shot MMLU, limit {cfg['limit'] or 'none'}, "
              f"seed {cfg['seed']}, ECE with {cfg['ece_bins']} equal-width bins; accuracies in %", ""]
    lines += ["## Summary", "", markdown_table(*summary_rows(summary)), "## Per task", "",
              markdown_table(*subject_rows(summary))]
    lines += ["Retention is student / teacher (teacher / student for perplexity, ECE and Brier, so > 1 is "
              "better than the teacher); improvement is student - baseline (sign flipped for those metrics).", ""]
    return "\n".join(lines)


def _bar_chart(path: Path, labels: list[str], series: dict[str, list[float]], title: str,
               chance: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels) + 2), 4.5))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(labels))
    for k, (name, values) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=name)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.0f}%)")
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_charts(out: Path, results: dict) -> list[str]:
    written = []
    tasks = results["model"]["tasks"]
    subjects = [t for t in tasks if t.startswith("mmlu_medical/")]
    if subjects:
        _bar_chart(out / "mmlu_medical.png", [s.split("/", 1)[1] for s in subjects],
                   {r: [results[r]["tasks"][s]["acc"] for s in subjects] for r in results}, "MMLU medical, per subject",
                   chance=25.0)
        written.append("mmlu_medical.png")
    groups = list(results["model"]["groups"])
    if groups:
        _bar_chart(out / "benchmarks.png", groups, {r: [results[r]["groups"][g]["acc"] for g in groups] for r in results},
                   "Multiple-choice benchmarks")
        written.append("benchmarks.png")
    return written


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("distillm-edge", "torch", "transformers", "llama-cpp-python", "onnxruntime"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def write_run(out: Path, cfg, models: dict, data: dict, results: dict, samples: dict, seconds: float) -> dict:
    out = ensure_dir(Path(out))
    retention, improvement = compare(results)
    summary = {
        "manifest": {"config": to_dict(cfg), "models": models, "data": data, "seed": cfg.seed,
                     "versions": _versions(), "seconds": round(seconds, 1), "command": " ".join(sys.argv)},
        "results": results, "retention": retention, "improvement": improvement,
    }
    save_yaml(cfg, out / "config.yaml")
    for role, per_task in samples.items():
        for task, rows in per_task.items():
            atomic_write_text(out / "samples" / f"{role}.{task.replace('/', '.')}.jsonl",
                              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    summary["charts"] = write_charts(out, results) if results["model"]["tasks"] else []
    atomic_write_json(out / "results.json", summary)
    atomic_write_text(out / "report.md", render_markdown(summary))
    return summary


def print_summary(summary: dict, console: Console) -> None:
    for title, (headers, rows) in (("summary", summary_rows(summary)), ("per task", subject_rows(summary))):
        if not rows:
            continue
        table = Table(title=f"eval {title}")
        for i, h in enumerate(headers):
            table.add_column(h, justify="left" if i == 0 else "right")
        for r in rows:
            table.add_row(*r)
        console.print(table)
