"""Cached teachers in ``distillm-edge train``: ``teachers[i].cache: DIR`` reads that teacher's top-k log-probs
from a ``distillm-edge teachers cache`` folder instead of running it; no weights load.

- :func:`open_caches` (setup, right after the tokenizers): opens each cache and refuses what it cannot
  serve, each with a ConfigError naming the option and the fix: an incomplete cache, another dataset,
  teacher, student tokenizer or prompt masking, a temperature schedule outside the cached grid, and
  what needs a live teacher (hidden-state or attention alignment with it, confidence weighting, ULD,
  the learned vocabulary projection);
- :func:`check_coverage` (end of setup): every training record the run's plan will use is cached
  (else a ConfigError before the first step); held-out records missing from the cache are reported
  (that teacher's held-out scores are then not available);
- :func:`attach_rows` (``step.step_batches``): each micro-batch's cached rows as ``batch.cached[i]``;
  ``step.distillation`` then uses ``teachers.cache.cached_kd_loss`` for that teacher;
- :func:`score_cached` (``report.evaluate``): held-out teacher perplexity (exact: cached target
  log-probs) and KL to the student at τ = 1 on top-k ∪ {tail} (a lower bound of the online KL; see
  ``teachers/cache.py`` for the tolerance), from the cache.

Test: ``pytest tests/training/test_trainer_cache.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from distillm_edge.config import ConfigError
from distillm_edge.errors import UserError
from distillm_edge.training.config import TrainConfig

if TYPE_CHECKING:
    from distillm_edge.training.batches import Batch, Example
    from distillm_edge.training.teachers import Teacher
    from distillm_edge.training.trainer import Run


def temperature_range(cfg: TrainConfig) -> tuple[float, float]:
    """The lowest and highest distillation temperature the run's schedule reaches."""
    tc = cfg.temperature
    if tc.schedule == "constant":
        return tc.initial, tc.initial
    return min(tc.initial, tc.floor), max(tc.initial, tc.floor)


def refuse_live_only(cfg: TrainConfig, i: int, t: Teacher) -> None:
    """What only a running teacher can give: a ConfigError naming the option."""
    where = f"teachers[{i}].cache ({t.name})"
    fix = f"remove teachers[{i}].cache to run this teacher online"
    if cfg.hidden.weight > 0 and cfg.hidden.teacher == i:
        raise ConfigError(f"{where}: hidden-state alignment (hidden.weight {cfg.hidden.weight}, hidden.teacher {i}) needs "
                          f"the live teacher's hidden states; {fix}, or set hidden.weight: 0.")
    if cfg.attention.weight > 0 and cfg.attention.teacher == i:
        raise ConfigError(f"{where}: attention alignment (attention.weight {cfg.attention.weight}, attention.teacher {i}) "
                          f"needs the live teacher's attention maps; {fix}, or set attention.weight: 0.")
    if cfg.teacher_weighting == "confidence":
        raise ConfigError(f"{where}: teacher_weighting: confidence needs each teacher's full-vocabulary entropy, which a "
                          f"top-k cache does not hold; use teacher_weighting: static, or {fix}.")
    if not t.same_tokenizer and not cfg.cross_tokenizer.shared_only:
        raise ConfigError(f"{where}: a cached teacher with another tokenizer teaches through the shared-vocabulary KL "
                          f"only (ULD and the learned projection need its full logits); set cross_tokenizer.uld_weight: 0 "
                          f"and cross_tokenizer.method: shared_vocab, or {fix}.")


def check_identity(i: int, t: Teacher, spec: str, cache) -> None:
    """The cache was built by this teacher (same tokenizer; same spec or the same weights)."""
    from distillm_edge.training.cross_tokenizer import tokenizer_hash

    settings = cache.manifest["settings"]
    where = f"teachers[{i}].cache {cache.path}"
    if settings["teacher_tokenizer"] != tokenizer_hash(t.tokenizer):
        raise ConfigError(f"{where}: built for teacher {settings['teacher']} (another tokenizer than {spec}); point "
                          f"teachers[{i}].cache at {spec}'s cache, or build one with `distillm-edge teachers cache "
                          f"--teacher {spec}`.")
    if settings["teacher"] != spec:
        from distillm_edge.io import sha256_dir
        from distillm_edge.models import local_dir

        where_dir = Path(str(local_dir(spec, progress=False)))
        if not where_dir.is_dir() or sha256_dir(where_dir) != settings["teacher_sha256"]:
            raise ConfigError(f"{where}: built for teacher {settings['teacher']}, not teachers[{i}].model {spec}; build "
                              f"its cache with `distillm-edge teachers cache --teacher {spec}`.")
    if (cache.vocab_map is None) != t.same_tokenizer:
        raise ConfigError(f"{where}: built without the shared vocabulary this student needs for {spec} (another "
                          "tokenizer); rebuild it with --student naming this run's student.")


def open_caches(cfg: TrainConfig, teachers: list[Teacher], student_tokenizer, data_path: Path, log) -> None:
    """Open ``teachers[i].cache`` for every teacher that has one (``Teacher.cache``); checks as in the module docstring."""
    from distillm_edge.teachers.cache import CachedTeacher

    lo, hi = temperature_range(cfg)
    for i, (t, tc) in enumerate(zip(teachers, cfg.teachers, strict=True)):
        if not tc.cache:
            continue
        refuse_live_only(cfg, i, t)
        try:
            cache = CachedTeacher.open(tc.cache, data_dir=data_path, student_tokenizer=student_tokenizer,
                                       train_on_prompt=cfg.train_on_prompt)
        except ConfigError:
            raise
        except UserError as exc:
            raise ConfigError(f"teachers[{i}].cache: {exc}") from None
        check_identity(i, t, tc.model, cache)
        grid = cache.temperatures
        if lo < grid[0] - 1e-9 or hi > grid[-1] + 1e-9:
            raise ConfigError(
                f"teachers[{i}].cache {cache.path}: the temperature schedule ({cfg.temperature.schedule}, "
                f"{cfg.temperature.initial:g} -> {cfg.temperature.floor:g}) leaves the cached grid {grid[0]:g}..{grid[-1]:g}; "
                f"keep temperature.initial/floor within {grid[0]:g}..{grid[-1]:g}, or rebuild the cache with "
                f"--temperatures covering {lo:g}..{hi:g}.")
        t.cache = cache
        m = cache.manifest
        mass = m.get("tail_mass", {})
        log.say(f"teacher {t.name}: cached ({cache.path}: top-{m['settings']['top_k']}, {m['records']:,} records, "
                f"{m['bytes_per_row']:.0f} bytes/row; teacher mass outside the top-k "
                + ", ".join(f"{100 * v:.0f}% at tau {k}" for k, v in mass.items() if float(k) in (lo, hi, 1.0))
                + "); its weights are not loaded")


def check_coverage(r: Run) -> None:
    """Every training record the plan uses from here on is cached (ConfigError otherwise); note held-out gaps."""
    cached = [t for t in r.teachers if t.cache is not None]
    if not cached:
        return
    used = r.plan[r.state.micro : r.total_steps * r.cfg.grad_accum * r.accelerator.num_processes]
    ids = {r.train_examples[i].id for batch in used for i in batch}
    for t in cached:
        missing = sorted(x for x in ids if x not in t.cache)
        if missing:
            raise ConfigError(
                f"teachers[{t.index}].cache {t.cache.path}: {len(missing)} of the {len(ids)} training records this run "
                f"uses are not cached (e.g. {missing[0]}); rebuild the cache over this run's data (`distillm-edge "
                f"teachers cache --data ...` without --max-examples), or remove teachers[{t.index}].cache.")
        held_out = [e.id for e in r.valid_examples if e.id not in t.cache]
        if held_out:
            r.log.say(f"[yellow]teacher {t.name} (cached): {len(held_out)} of {len(r.valid_examples)} held-out records are "
                      "not in its cache; its held-out perplexity and KL cover only the others (not available when none "
                      "are): build the cache with --split train,valid.[/]")


def attach_rows(teachers: Sequence[Teacher], batch: Batch, examples: Sequence[Example]) -> Batch:
    """``batch.cached[i]``: cached teacher i's rows for the micro-batch's ``examples`` (batch order)."""
    for t in teachers:
        if t.cache is not None:
            batch.cached[t.index] = t.cache.rows_for(examples)
    return batch


def score_cached(scores: dict, t: Teacher, example: Example, student_logits: dict, n: int) -> None:
    """Add one held-out example to cached teacher ``t``'s scores and its KL to each student (``report.evaluate``).

    An example the cache does not hold adds nothing (that teacher's numbers cover the cached ones only).
    """
    if example.id not in t.cache or not student_logits or not t.cache.temperatures[0] <= 1.0 <= t.cache.temperatures[-1]:
        return
    sc = scores[t.name]
    for k, (name, logits) in enumerate(student_logits.items()):
        got = t.cache.score(example, logits)
        if k == 0:
            sc.nll += got["nll"]
            sc.student_tokens += n
            if not t.same_tokenizer:
                sc.aligned += int(got["aligned"])
                sc.mass += got["mass"]
                sc.vocab_overlap = len(t.cache.vocab_map[1]) / logits.shape[-1]
        st = scores[name]
        st.kl[t.name] = st.kl.get(t.name, 0.0) + got["kl"]
        st.kl_rows[t.name] = st.kl_rows.get(t.name, 0) + got["kl_rows"]
