"""Staged distillation: a recipe of ``stages:`` (large teacher → intermediate student → final student), run in order.

A staged recipe is an ordinary recipe file with a ``stages:`` list. Each entry is a complete
training stage written as ``TrainConfig`` keys; the file's other top-level keys (except
``description``) are shared by every stage, each stage's own keys override them, and the command
line's ``key=value`` overrides apply to every stage last (``max_steps=2`` shortens all of them).
A later stage names an earlier stage's trained student as ``stage:N`` (1-based) in
``teachers[].model`` or ``student.model`` (as a teacher, or as its initial weights, cut again by
``student.layers`` or taken whole with ``layers: null``); it resolves to ``<out>/stage-N/model``.

Each stage is a normal run directory, ``<out>/stage-N/`` (``config.yaml``, checkpoints, ``model/``,
``report.md``, ``summary.json``). Running the same command again resumes: a finished stage (its
``summary.json`` exists) is skipped, provided its saved config matches in the fields that change
the data or model (``trainer.RESUME_LOCKED``); a stage with checkpoints continues from the latest
one; the rest run from scratch. ``distillm-edge train --resume <out>`` does the same from the
``staged.yaml`` written into ``<out>``. At the end the held-out figures of every stage are printed
as one table and written to ``<out>/staged.md`` and ``<out>/staged.json``.

Every reference is checked before the first stage trains: ``stage:3`` in stage 2, ``stage:0`` or
``stage:x`` are ConfigErrors naming the recipe file, the stage and the option.

Run: ``distillm-edge train --recipe staged-cpu --out runs/staged``.
Test: ``pytest tests/training/test_staged.py`` (tiny random models, seconds).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillm_edge.config import ConfigError, deep_merge, from_mapping, load_yaml
from distillm_edge.io import atomic_write_json, atomic_write_text, ensure_dir
from distillm_edge.training.config import TrainConfig, recipe_path

STAGED_FILE = "staged.yaml"  # the stages as given (references unresolved), for --resume <out>
PREFIX = "stage:"


@dataclass(frozen=True)
class StagedConfig:
    """The resolved stages of one staged recipe (each with ``out`` = ``<out>/stage-N`` and references resolved)."""

    source: str  # where the stages came from, for messages ("recipe staged-cpu", a file, ...)
    out: str  # the top-level run directory
    stages: tuple[TrainConfig, ...]
    raw: tuple[dict, ...]  # each stage's merged keys before references resolve (written to staged.yaml)
    description: str = ""


def _load(recipe: str | None, config_file: str | None) -> tuple[dict[str, Any], str]:
    data: dict[str, Any] = {}
    where = []
    if recipe:
        data = load_yaml(recipe_path(recipe))
        where.append(str(recipe_path(recipe)))
    if config_file:
        data = deep_merge(data, load_yaml(config_file))
        where.append(str(config_file))
    return data, " + ".join(where)


def from_cli(recipe: str | None, config_file: str | None, resume: Path | None, out: str | None,
             overrides: dict[str, Any]) -> StagedConfig | None:
    """The staged config behind the ``train`` command's options, or None when the recipe declares no stages."""
    if resume is not None:
        saved = Path(resume) / STAGED_FILE
        if not saved.is_file():
            return None
        if recipe or config_file:
            raise ConfigError(f"--resume {resume} continues the stages saved in {saved}; drop --recipe/--config "
                              "(overrides still apply).")
        return resolve(None, str(saved), {**overrides, "out": str(resume)})
    if not recipe and not config_file:
        return None
    data, _ = _load(recipe, config_file)
    if "stages" not in data:
        return None
    return resolve(recipe, config_file, {**overrides, **({"out": out} if out else {})})


def resolve(recipe: str | None = None, config_file: str | None = None,
            overrides: dict[str, Any] | None = None) -> StagedConfig:
    """Every stage as a validated ``TrainConfig``; references checked before anything runs."""
    data, where = _load(recipe, config_file)
    overrides = dict(overrides or {})
    stages = data.pop("stages", None)
    if not isinstance(stages, list) or not stages or not all(isinstance(s, Mapping) for s in stages):
        raise ConfigError(f"{where}: stages: give a list of stages, each a mapping of training keys, e.g. "
                          "stages: [{student: {layers: 'even:20'}}, {teachers: [{model: 'stage:1'}], ...}].")
    description = str(data.pop("description", "") or "")
    out = str(overrides.pop("out", None) or data.pop("out", None) or f"runs/staged-{time.strftime('%Y%m%d-%H%M%S')}")
    configs, raws = [], []
    for i, stage in enumerate(stages, start=1):
        if "out" in stage:
            raise ConfigError(f"{where}, stage {i}: out: each stage writes to <out>/stage-{i}; remove the stage's out "
                              "and give --out for the whole recipe.")
        merged = deep_merge(deep_merge(data, stage), overrides)
        merged.setdefault("description", f"stage {i} of {len(stages)}" + (f": {description}" if description else ""))
        raws.append(merged)
        resolved = _resolve_references(merged, i, len(stages), Path(out), where)
        resolved["out"] = str(Path(out) / f"stage-{i}")
        configs.append(from_mapping(TrainConfig, resolved, where=f"{where}, stage {i}"))
    return StagedConfig(where, out, tuple(configs), tuple(raws), description)


def stage_model(root: Path, n: int) -> Path:
    """The trained student of stage ``n`` (1-based) under ``root``."""
    return Path(root) / f"stage-{n}" / "model"


def _resolve_references(merged: dict[str, Any], index: int, count: int, root: Path, where: str) -> dict[str, Any]:
    """``merged`` with each ``stage:N`` in teachers[].model / student.model replaced by ``<root>/stage-N/model``."""

    def target(option: str, value: str) -> str:
        n = value[len(PREFIX):].strip()
        place = f"{where}, stage {index}, {option}: '{value}'"
        if not n.isdigit() or not 1 <= int(n) <= count:
            raise ConfigError(f"{place} names no stage; this recipe has stages 1 to {count}. Write stage:N with N the "
                              "number of an earlier stage (1 = the first), or a model spec.")
        if int(n) >= index:
            earlier = f"stage:1 to stage:{index - 1}" if index > 1 else "none: stage 1 runs first"
            raise ConfigError(f"{place}: stage {n} has not run when stage {index} starts (stages run in order); a "
                              f"stage can use only an earlier stage's model ({earlier}). Reorder the stages or name "
                              "an earlier one.")
        return str(stage_model(root, int(n)))

    out = dict(merged)
    teachers = out.get("teachers")
    if isinstance(teachers, list):
        out["teachers"] = [dict(t, model=target(f"teachers[{j}].model", t["model"]))
                           if isinstance(t, Mapping) and _is_ref(t.get("model")) else t for j, t in enumerate(teachers)]
    student = out.get("student")
    if isinstance(student, Mapping) and _is_ref(student.get("model")):
        out["student"] = dict(student, model=target("student.model", student["model"]))
    for option in _stray_references(out):
        raise ConfigError(f"{where}, stage {index}, {option}: only teachers[].model and student.model can name a stage "
                          "(stage:N); give a value of its own here.")
    return out


def _is_ref(value: Any) -> bool:
    return isinstance(value, str) and value.strip().startswith(PREFIX)


def _stray_references(value: Any, path: str = "") -> list[str]:
    if _is_ref(value):
        return [path]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _stray_references(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _stray_references(v, f"{path}[{i}]")]
    return []


def run(cfg: StagedConfig, allow_config_change: bool = False) -> Path:
    """Train the stages in order (skipping finished ones); print and save the summary table. Returns ``<out>``."""
    import yaml
    from rich.console import Console

    from distillm_edge.training import trainer

    console = Console(stderr=True, soft_wrap=True)
    root = ensure_dir(Path(cfg.out).expanduser())
    atomic_write_text(root / STAGED_FILE, yaml.safe_dump({"description": cfg.description, "stages": list(cfg.raw)},
                                                         sort_keys=False))
    rows = []
    for i, scfg in enumerate(cfg.stages, start=1):
        run_dir = Path(scfg.out)
        if (run_dir / "summary.json").is_file():
            _check_finished(run_dir, scfg, i)
            console.print(f"[green]stage {i}/{len(cfg.stages)}: finished earlier ({run_dir / 'summary.json'}); skipped[/]")
        else:
            resume = bool(trainer.ckpt.list_checkpoints(run_dir))
            console.print(f"[bold]stage {i}/{len(cfg.stages)}[/]: {scfg.description} -> {run_dir}"
                          + (" (resuming from its latest checkpoint)" if resume else ""))
            trainer.run(scfg, resume=resume, allow_config_change=allow_config_change)
        rows.append(figures(i, run_dir, root))
    table = format_table(rows)
    atomic_write_text(root / "staged.md", f"# Staged distillation ({cfg.description or cfg.source})\n\n{table}\n")
    atomic_write_json(root / "staged.json", {"source": cfg.source, "stages": rows})
    print(table, flush=True)
    return root


def _check_finished(run_dir: Path, scfg: TrainConfig, index: int) -> None:
    """A finished stage is reused only if it was trained with the same data/model settings."""
    from distillm_edge.training.trainer import RESUME_LOCKED, config_hash

    saved = from_mapping(TrainConfig, load_yaml(run_dir / "config.yaml"), where=str(run_dir / "config.yaml"))
    if config_hash(saved) != config_hash(scfg):
        differ = [k for k in RESUME_LOCKED if getattr(saved, k) != getattr(scfg, k)]
        raise ConfigError(f"stage {index}: {run_dir} holds a finished run trained with other settings "
                          f"({', '.join(differ)}); later stages would build on it. Give another --out, or remove "
                          f"{run_dir} to train stage {index} again.")


def figures(index: int, run_dir: Path, root: Path) -> dict:
    """One stage's row: its student, teachers (earlier stages named as such), and held-out figures."""
    cfg = from_mapping(TrainConfig, load_yaml(run_dir / "config.yaml"), where=str(run_dir / "config.yaml"))
    summ = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    names = {str(stage_model(root, n)): f"stage {n}" for n in range(1, index)}

    def label(spec: str) -> str:
        return names.get(spec, Path(spec.rstrip("/")).name or spec)

    ev, real = summ.get("evaluation"), summ.get("generalization")
    row = {"stage": index, "run_dir": str(run_dir), "student": label(cfg.student.model) + (
        f" [{cfg.student.layers}]" if cfg.student.layers else ""), "teachers": [label(t.model) for t in cfg.teachers],
        "steps": summ["steps"], "train_seconds": summ["train_seconds"],
        "held_out_before": ev["student_perplexity"]["before"] if ev else None,
        "held_out_after": ev["student_perplexity"]["after"] if ev else None,
        "real_perplexity": real["student_perplexity"] if real else None,
        "real_ratio": {label(spec): t["ratio"] for spec, t in _by_spec(cfg, real).items()} if real else {}}
    return row


def _by_spec(cfg: TrainConfig, real: dict) -> dict[str, dict]:
    """``real["teachers"]`` (keyed by the trainer's display names) keyed by the teachers' specs instead."""
    from distillm_edge.training.teachers import display_name

    names = [display_name(t.model) for t in cfg.teachers]
    out = {}
    for i, t in enumerate(cfg.teachers):
        name = names[i] if names.count(names[i]) == 1 else f"{names[i]}#{i}"
        if name in real["teachers"]:
            out[t.model] = real["teachers"][name]
    return out


def format_table(rows: list[dict]) -> str:
    """The fixed-width table of every stage's held-out figures."""
    from distillm_edge.training.ablation import text_table

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    head = ["stage", "student", "teachers", "steps", "held-out ppl before", "held-out ppl after", "real ppl",
            "real ppl / teacher"]
    body = [[str(r["stage"]), r["student"], ", ".join(r["teachers"]), str(r["steps"]), num(r["held_out_before"]),
             num(r["held_out_after"]), num(r["real_perplexity"]),
             ", ".join(f"{v:.2f}x {k}" for k, v in r["real_ratio"].items()) or "-"] for r in rows]
    return text_table(head, body)

