"""Write an eval run directory and print its summary.

The run directory holds everything needed to reproduce or audit a result:

- ``config.yaml``: the resolved ``EvalConfig``;
- ``results.json``: every metric per model role (model / teacher / baseline) with standard errors
  and 95% intervals for accuracies, retention (student / teacher, inverted for lower-is-better
  metrics; tokenizer-free metrics only), improvement over the baseline, the paired per-item
  accuracy differences with their 95% intervals (``noise``),
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
import math
import platform
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from distillm_edge.config import save_yaml, to_dict
from distillm_edge.eval import metrics
from distillm_edge.io import atomic_path, atomic_write_json, atomic_write_text, ensure_dir

GEN_METRICS = ("rouge1", "rouge2", "rougeL", "bleu1", "bleu4", "bits_per_byte", "word_perplexity", "byte_perplexity",
               "token_perplexity", "next_token_accuracy")
ROLE_TITLES = {"model": "model", "teacher": "teacher", "baseline": "baseline"}


def flatten(result: dict) -> dict[str, float]:
    """One role's results as ``{"<task or group> <metric>": value}`` rows for the summary table."""
    rows: dict[str, float] = {}
    for group, g in result.get("groups", {}).items():
        if group.startswith("mmlu_medical"):
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


def _stderr(result: dict, row: str) -> float | None:
    """The standard error of an accuracy row (task, group micro or macro), else None."""
    name, _, metric = row.rpartition(" ")
    if metric != "acc":
        return None
    group, _, avg = name.rpartition(" ")
    if avg in ("macro", "micro") and group in result.get("groups", {}):
        return result["groups"][group][f"{avg}_acc_stderr"]
    entry = result.get("tasks", {}).get(name) or result.get("groups", {}).get(name)
    return entry.get("acc_stderr") if entry else None


def _correct(samples: dict, tasks: list[str], row: str) -> np.ndarray | None:
    """Per-item correctness (0/100) behind an accuracy row: one task, or a group's tasks pooled (micro)."""
    name, _, metric = row.rpartition(" ")
    if metric != "acc" or name.endswith(" macro"):
        return None
    name = name.removesuffix(" micro")
    members = [t for t in tasks if t == name or t.startswith(name + "/")]
    if not members or any(t not in samples for t in members):
        return None
    return np.array([100.0 * (s["pred"] == s["gold"]) for t in members for s in samples[t]])


def compare(results: dict, samples: dict | None = None) -> tuple[dict, dict, dict]:
    """Retention (vs teacher), improvement (vs baseline) and noise of every summary row and task accuracy.

    Per-token rows (token perplexity, next-token accuracy) are not compared: they depend on each
    model's tokenizer. ``noise[role][row]`` is the paired per-item difference (student - role, in
    accuracy points) with its 95% interval and whether it is within noise, for accuracy rows.
    """
    samples = samples or {}
    student = {**flatten(results["model"]), **{f"{t} acc": v["acc"] for t, v in results["model"]["tasks"].items()}}
    tasks = list(results["model"]["tasks"])
    retention, improvement, noise = {}, {}, {}
    for role, out, fn in (("teacher", retention, metrics.retention), ("baseline", improvement, metrics.improvement)):
        if role not in results:
            continue
        other = {**flatten(results[role]), **{f"{t} acc": v["acc"] for t, v in results[role]["tasks"].items()}}
        noise[role] = {}
        for row, value in student.items():
            if _kind(row) in metrics.PER_TOKEN:
                continue
            out[row] = fn(_kind(row), value, other.get(row))
            mine, theirs = _correct(samples.get("model", {}), tasks, row), _correct(samples.get(role, {}), tasks, row)
            if mine is not None and theirs is not None and mine.shape == theirs.shape:
                noise[role][row] = metrics.paired_difference(mine, theirs)
        gen = {r: samples.get(r, {}).get("generation") for r in ("model", role)}
        if gen["model"] and gen[role] and len(gen["model"]) == len(gen[role]):
            # both models scored the same reference text: per-item differences are paired
            n_bytes = sum(s["reference_bytes"] for s in gen["model"])
            bits = {r: np.array([s["reference_nll"] for s in gen[r]]) / math.log(2) for r in gen}
            noise[role]["generation bits_per_byte"] = metrics.paired_total_difference(bits["model"], bits[role], n_bytes)
            noise[role]["generation rougeL"] = metrics.paired_difference(
                np.array([s["rougeL"] for s in gen["model"]]), np.array([s["rougeL"] for s in gen[role]]))
    return retention, improvement, noise


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _fmt_acc(result: dict, row: str, digits: int = 2) -> str:
    value, se = flatten(result).get(row), _stderr(result, row)
    if value is None and row.endswith(" acc"):
        value = result.get("tasks", {}).get(row[:-4], {}).get("acc")
    return _fmt(value, digits) + (f" ± {se:.{digits}f}" if se is not None and value is not None else "")


def _fmt_noise(entry: dict | None, digits: int = 2) -> str:
    if not entry:
        return "–"
    lo, hi = entry["ci95"]
    return f"{entry['diff']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]" + (" ~" if entry["within_noise"] else "")


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def summary_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    results = summary["results"]
    roles = list(results)
    noise = summary.get("noise", {})
    headers = ["metric", *roles]
    if "teacher" in results:
        headers += ["retention", "Δ vs teacher [95% CI]"]
    if "baseline" in results:
        headers += ["improvement", "Δ vs baseline [95% CI]"]
    flat = {r: flatten(results[r]) for r in roles}
    rows = []
    for row in flat["model"]:
        digits = 3 if _kind(row) in ("ece", "brier", "bits_per_byte") else 2
        line = [row, *(_fmt_acc(results[r], row, digits) for r in roles)]
        for role, key in (("teacher", "retention"), ("baseline", "improvement")):
            if role in results:
                line.append("per model" if _kind(row) in metrics.PER_TOKEN else _fmt(summary[key].get(row), 3 if role == "teacher" else digits))
                line.append(_fmt_noise(noise.get(role, {}).get(row), digits))
        rows.append(line)
    return headers, rows


def subject_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    results = summary["results"]
    roles = list(results)
    noise = summary.get("noise", {})
    headers = ["task", "n", *(f"{r} acc" for r in roles)]
    if "teacher" in results:
        headers += ["retention", "Δ vs teacher [95% CI]"]
    rows = []
    for task, entry in results["model"]["tasks"].items():
        line = [task, str(entry["n"]), *(_fmt_acc(results[r], f"{task} acc") for r in roles)]
        if "teacher" in results:
            line += [_fmt(summary["retention"].get(f"{task} acc"), 3), _fmt_noise(noise.get("teacher", {}).get(f"{task} acc"))]
        rows.append(line)
    return headers, rows


NOTES = (
    "Accuracies in % ± the standard error as lm-eval computes it (sample std with n - 1 over sqrt(n); micro: "
    "all items pooled; macro: sqrt(sum se²) / k); results.json also holds the 95% intervals (± 1.96 se). "
    "Retention is student / teacher (teacher / student for bits per byte, word/byte perplexity, ECE and Brier, "
    "so > 1 is better than the teacher); improvement is student - baseline (sign flipped for those metrics). "
    "Retention and improvement use tokenizer-free measures only: token perplexity and next-token accuracy depend "
    "on each model's tokenizer and are shown per model. Δ is the paired per-item difference (student - other: "
    "accuracy and ROUGE-L points, bits per byte over the same bytes) with its 95% interval; ~ marks a difference "
    "within noise (the interval holds 0)."
)


def render_markdown(summary: dict) -> str:
    m = summary["manifest"]
    lines = ["# distillm-edge eval", ""]
    for role, info in m["models"].items():
        lines.append(f"- **{role}**: `{info['spec']}` on {info['backend']} ({info['dtype']}), "
                     f"sha256 `{info['sha256'][:16] or 'n/a'}`")
    cfg = m["config"]
    lines += [f"- MMLU split `{cfg['split']}` (the task ids name the split scored), {cfg['num_fewshot']}-shot MMLU, limit {cfg['limit'] or 'none'}, "
              f"seed {cfg['seed']}, ECE with {cfg['ece_bins']} equal-width bins; accuracies in %", ""]
    lines += ["## Summary", "", markdown_table(*summary_rows(summary)), "## Per task", "",
              markdown_table(*subject_rows(summary))]
    lines += [NOTES, ""]
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
    subjects = [t for t in tasks if t.startswith("mmlu_medical") and "/" in t]
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
    retention, improvement, noise = compare(results, samples)
    summary = {
        "manifest": {"config": to_dict(cfg), "models": models, "data": data, "seed": cfg.seed,
                     "versions": _versions(), "seconds": round(seconds, 1), "command": " ".join(sys.argv)},
        "results": results, "retention": retention, "improvement": improvement, "noise": noise,
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
