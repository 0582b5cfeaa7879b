"""Offline teacher-logit cache: run a teacher once over a prepared dataset, distil from its top-k afterwards.

``distillm-edge teachers cache --teacher SPEC --data DIR --out DIR [--top-k 64]`` encodes every record
of a split with the teacher's own tokenizer and chat template (``training.batches.encode``, as the
trainer does), runs the teacher (``training.teachers.teacher_forward``, one record per forward: no
padding) and stores, for every position that predicts a counted token:

- the top-k log-probabilities (fp16) and their ids (int32) in the **teacher's own vocabulary**;
- the rest of the distribution as one bucket: its log-mass ``f(β) = log Σ_tail exp(β · lp)`` and
  slope ``f'(β)`` at a grid of inverse temperatures β = 1/τ (``--temperatures``, default 1 … 8),
  so a tempered teacher ``softmax(z/τ)`` is known on top-k ∪ {tail} for any τ in the grid's range
  (cubic Hermite interpolation in β between grid points: exact on them, ≤ 2e-3 nats between them
  on Zipf-like and Gaussian logits). With ``--student`` naming a student whose tokenizer differs,
  the tail is taken *within the shared vocabulary* instead (what the cross-tokenizer
  shared-vocabulary KL renormalizes over), and the vocabulary map is stored;
- per record, the teacher's token ids, character offsets, special-token flags and response
  start: what ``batches.align`` needs to align the teacher with any student tokenization later.

Storage: one ``safetensors`` file per shard of ``--shard-size`` records (no pickle), compressed as
a whole with zstd (level 3: ~0.5 GB/s decompression, and int32 ids below 2^18 and
sorted fp16 log-probs compress well; measured ratio in the manifest), written atomically; a
shard whose file exists with the same cache key is skipped, so an interrupted run resumes.
``manifest.json``: teacher spec + weights sha256, tokenizer hashes, dataset sha256, split, k,
temperatures, records/rows, bytes per row (compressed and raw), ``tail_mass`` (mean teacher
probability outside the top-k at each grid temperature: how coarse the cache is there), ``complete``.

The loss (:func:`cached_kd_loss`, pure): the divergence between the *coarsened* distributions
over top-k ∪ {tail} (teacher from the cache, student from its live logits: q_tail = 1 - Σ q_top),
forward KL by default, any ``losses.KINDS``; chunked like ``losses.kd_loss`` with a closed-form
gradient. For a cross-tokenizer teacher (``vocab_map``) both distributions are restricted to the
shared vocabulary first, as ``cross_tokenizer.cross_tokenizer_kd`` does (ULD is not cached).
**Tolerance against the online loss**: equal up to fp16 rounding of the log-probs (~1e-3
relative) when top-k covers the vocabulary; otherwise smaller by exactly
``Σ p_tail · KL(p_tail/p_tail(τ) || q_tail/q_tail(τ))`` (coarsening never increases a KL), which is
small when the tempered teacher puts little mass outside its top-k (τ near 1) and grows with τ.
Measured on 2 built-in records at top-64 (``pytest -m slow tests/teachers/test_cache.py``): the
teacher mass outside the top-64 is 1.9 % (SmolLM2) / 5.5 % (Gemma-3, shared vocabulary) at τ = 1,
55 % / 64 % at τ = 2 and 99 % at τ = 8; cached/online KD at τ = 1 is 0.99 / 0.94. So a cache is a
faithful teacher near τ = 1 (the floor of the progressive schedule) and a coarse one at high τ;
``benchmarks/train_step.py`` prints the ratio by k and τ.

In ``train`` (``training/cached_teachers.py``): ``teachers[i].cache: DIR`` loads no weights for that
teacher; setup opens the cache (completeness, dataset hash, teacher, student tokenizer, prompt
masking, the temperature schedule within the grid) and refuses what needs a live teacher; the step
uses :func:`cached_kd_loss`; held-out teacher perplexity is exact from the cached target
log-probs (``--split train,valid`` caches the held-out records too) and held-out KL is the top-k +
tail-bucket KL. ``distillm-edge train --ablation`` builds its caches with ``record_ids`` (only the
records its runs use).

Test: ``pytest tests/teachers/test_cache.py tests/training/test_logit_cache.py tests/training/test_trainer_cache.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from distillm_edge.errors import UserError

CACHE_VERSION = 2  # 2: per-row target log-probs (teacher perplexity from the cache); several splits
TEMPERATURES: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0, 8.0)  # interpolation error <= 2e-3 nats (see tests)
MANIFEST = "manifest.json"
_FMIN = torch.finfo(torch.float32).min


@dataclass(frozen=True)
class CacheConfig:
    """``distillm-edge teachers cache`` options."""

    teacher: str
    data: str  # a prepared dataset directory, or builtin
    out: str
    top_k: int = 64
    student: str | None = "smollm2-135m-instruct"  # for the shared-vocabulary tail of a cross-tokenizer teacher
    split: str = "train"  # or several, comma-separated: train,valid (the trainer's held-out scores read the cache too)
    max_length: int = 1024  # teacher tokens per record (the trainer gives other-tokenizer teachers 4 x max_length)
    train_on_prompt: bool = False
    temperatures: tuple[float, ...] = TEMPERATURES
    shard_size: int = 128
    dtype: str = "float32"
    threads: int = 0
    zstd_level: int = 3
    max_examples: int | None = None  # per split
    record_ids: tuple[str, ...] | None = None  # cache only these records (e.g. those an ablation's runs will use)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise UserError(f"--top-k {self.top_k}: must be >= 1 (e.g. 64).")
        if self.shard_size < 1 or self.max_length < 2:
            raise UserError(f"--shard-size {self.shard_size} / --max-length {self.max_length}: must be >= 1 / >= 2.")
        temps = list(self.temperatures)
        if not temps or any(t <= 0 for t in temps) or temps != sorted(set(temps)):
            raise UserError(f"--temperatures {temps}: give rising temperatures > 0, e.g. 1,1.5,2,3,4,8.")


# --------------------------------------------------------------------------- per-row summaries (pure)


def summarize_rows(logits: Tensor, top_k: int, temperatures: Sequence[float],
                   shared_ids: Tensor | None = None, targets: Tensor | None = None) -> dict[str, Tensor]:
    """Top-k log-probs/ids and the tail's ``[f(β), f'(β)]`` per row of teacher ``logits`` [n, V].

    With ``targets`` [n] (each row's next token in the teacher's own tokenization), also
    ``target_logp`` [n] fp32: the teacher's log-probability of it (its perplexity, exactly).

    ``tail`` [n, G, 2] covers the whole vocabulary outside the top-k; with ``shared_ids`` (a
    teacher with another tokenizer) ``shared_tail`` instead covers only the shared entries outside
    the top-k -- all the shared-vocabulary loss needs, and 5-6x cheaper for Gemma's 262k entries.
    An empty tail has f = -inf.
    """
    lp = torch.log_softmax(logits.float(), dim=-1)
    k = min(top_k, lp.shape[-1])
    top_logp, top_ids = lp.topk(k, dim=-1)
    rest = lp.scatter(1, top_ids, float("-inf"))
    out = {"top_ids": top_ids.to(torch.int32), "top_logp": top_logp.to(torch.float16)}
    if targets is not None:
        out["target_logp"] = lp.gather(1, targets.long().view(-1, 1).to(lp.device)).view(-1)
    if shared_ids is None:
        out["tail"] = _tail_stats(rest, temperatures)
    else:
        out["shared_tail"] = _tail_stats(rest[:, shared_ids.to(rest.device)], temperatures)
    return out


def _tail_stats(rest: Tensor, temperatures: Sequence[float]) -> Tensor:
    rest0 = torch.nan_to_num(rest, neginf=0.0)
    stats = []
    for tau in temperatures:
        x = rest * (1.0 / tau)
        f = torch.logsumexp(x, dim=-1)  # -inf for an empty tail
        p = torch.exp(x.sub_(torch.nan_to_num(f, neginf=0.0).unsqueeze(1)))  # the tempered tail, normalized
        stats.append(torch.stack([f, torch.linalg.vecdot(p, rest0)], dim=-1))  # f' = E_tail,beta[lp]
    return torch.stack(stats, dim=1)


def tail_at(tail: Tensor, temperatures: Sequence[float], tau: float) -> Tensor:
    """log Σ_tail exp(lp / τ) per row from the cached grid [n, G, 2] (cubic Hermite in β = 1/τ)."""
    temps = list(temperatures)
    if not temps[0] - 1e-9 <= tau <= temps[-1] + 1e-9:
        raise UserError(f"temperature {tau:g} is outside the cached range {temps[0]:g}..{temps[-1]:g}; rebuild the cache "
                        f"with --temperatures covering it, or keep the temperature schedule within that range.")
    for g, t in enumerate(temps):
        if abs(t - tau) < 1e-9:
            return tail[:, g, 0]
    hi = next(g for g, t in enumerate(temps) if t > tau)  # temps rise, so betas fall: beta(hi) < beta < beta(hi-1)
    b0, b1, beta = 1.0 / temps[hi], 1.0 / temps[hi - 1], 1.0 / tau
    f0, d0, f1, d1 = tail[:, hi, 0], tail[:, hi, 1], tail[:, hi - 1, 0], tail[:, hi - 1, 1]
    h = b1 - b0
    t = (beta - b0) / h
    value = ((2 * t**3 - 3 * t**2 + 1) * f0 + (t**3 - 2 * t**2 + t) * h * d0 + (-2 * t**3 + 3 * t**2) * f1
             + (t**3 - t**2) * h * d1)
    return torch.where(torch.isfinite(f0) & torch.isfinite(f1), value, torch.full_like(value, float("-inf")))


def tail_mass(top_ids: Tensor, top_logp: Tensor, tail: Tensor, temperatures: Sequence[float],
              shared_ids: Tensor | None = None) -> list[float]:
    """Per grid temperature, the summed teacher probability outside the top-k (within the shared vocabulary if
    ``shared_ids``): how much of the tempered distribution the tail bucket holds (a coverage diagnostic)."""
    top = top_logp.float()
    if shared_ids is not None:
        shared = torch.zeros(int(max(int(shared_ids.max()), int(top_ids.max()))) + 1, dtype=torch.bool)
        shared[shared_ids] = True
        top = top.masked_fill(~shared[top_ids.long()], float("-inf"))
    out = []
    for g, tau in enumerate(temperatures):
        f = tail[:, g, 0].float().unsqueeze(1)
        both = torch.cat([top / tau, f], dim=1)
        out.append(float(torch.exp(f.squeeze(1) - torch.logsumexp(both, dim=1)).nan_to_num(0.0).sum()))
    return out


# --------------------------------------------------------------------------- the loss (pure)


@dataclass
class CachedRows:
    """A cached teacher's rows for one batch, matched to the student's flat logits rows."""

    student_rows: Tensor  # [K] long, rising: indices into the student's flat rows
    top_ids: Tensor  # [K, k] long, teacher vocabulary
    top_logp: Tensor  # [K, k] fp32, log-probs at temperature 1
    tail: Tensor  # [K, G, 2]: full tail (same tokenizer) or shared-vocabulary tail (other tokenizer)
    temperatures: tuple[float, ...]
    unmatched: int = 0  # counted student rows with no teacher row (other tokenizer: not aligned)


def cached_kd_loss(student_logits: Tensor, rows: CachedRows, *, temperature: float = 1.0, kind: str = "forward_kl",
                   beta: float = 0.5, skew: float = 0.1, weights: Tensor | None = None,
                   normalizer: float | Tensor | None = None, vocab_map: tuple[Tensor, Tensor] | None = None,
                   chunk_size: int | None = None) -> Tensor:
    """tau^2 * D(teacher || student) on top-k ∪ {tail}, weighted mean over ``rows`` (see the module docstring).

    ``student_logits`` [1, N, V] flat rows (``weights`` [1, N] per row, like the trainer's); with
    ``vocab_map = (student_ids, teacher_ids)`` both distributions live on the shared vocabulary.
    0 (zero gradients) when there are no rows.
    """
    from distillm_edge.training.losses import check_kind, chunked_row_loss, counted_rows, divergence_rows

    check_kind(kind, beta, skew)
    if temperature <= 0:
        raise UserError(f"temperature must be > 0, got {temperature}")
    if student_logits.dim() != 3 or student_logits.shape[0] != 1:
        raise ValueError(f"student logits must be flat rows [1, N, V], got {tuple(student_logits.shape)}")
    dev, n_rows, vocab = student_logits.device, student_logits.shape[1], student_logits.shape[2]
    mask = torch.zeros(1, n_rows, dtype=torch.bool, device=dev)
    mask[0, rows.student_rows.to(dev)] = True
    if int(mask.sum()) != rows.student_rows.numel():
        raise ValueError("CachedRows.student_rows repeats a row")
    b, t, w = counted_rows(mask, weights, (1, n_rows), normalizer, dev)
    order = torch.argsort(rows.student_rows.to(dev))  # counted_rows lists rows in rising order
    top_ids, top_logp = rows.top_ids.to(dev)[order].long(), rows.top_logp.to(dev)[order].float()
    tail = tail_at(rows.tail.to(dev)[order].float(), rows.temperatures, float(temperature))
    if vocab_map is None:
        universe = None
        pos = torch.where(top_ids < vocab, top_ids, torch.full_like(top_ids, -1))
    else:
        s_ids, t_ids = (x.to(dev).long() for x in vocab_map)
        universe = s_ids
        lookup = torch.full((max(int(t_ids.max()) + 1, int(top_ids.max()) + 1),), -1, dtype=torch.long, device=dev)
        lookup[t_ids] = torch.arange(len(t_ids), device=dev)
        pos = lookup[top_ids]
    tau = float(temperature)

    def row_fn(s: Tensor, _te: Tensor | None, sl: slice, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        s.div_(tau)
        su = s if universe is None else s[:, universe]
        lq = torch.log_softmax(su, dim=-1)
        p = pos[sl]
        valid = p >= 0
        pc = p.clamp_min(0)
        in_top = torch.zeros_like(lq, dtype=torch.int32).scatter_add_(1, pc, valid.int()) > 0  # (add: invalid ids sit at 0 too)
        lq_top = lq.gather(1, pc).masked_fill(~valid, _FMIN)
        lq_rest = torch.logsumexp(lq.masked_fill(in_top, float("-inf")), dim=-1).clamp_min(_FMIN)
        lp = torch.cat([(top_logp[sl] / tau).masked_fill(~valid, float("-inf")), tail[sl].unsqueeze(1)], dim=1)
        lp = (lp - torch.logsumexp(lp, dim=-1, keepdim=True)).clamp_min(_FMIN)
        loss, g = divergence_rows(torch.cat([lq_top, lq_rest.unsqueeze(1)], dim=1), lp, kind, beta=beta, skew=skew,
                                  need_grad=need_grad)
        if not need_grad:
            return loss.mul_(tau * tau), None
        g_top, g_rest = g[:, :-1] * valid, g[:, -1:]
        tail_share = torch.exp(lq - lq_rest.unsqueeze(1)).masked_fill_(in_top, 0.0)  # d lse(tail) / d s_j
        gu = tail_share.mul_(g_rest).scatter_add_(1, pc, g_top)
        if universe is not None:
            full = torch.zeros_like(s)
            full[:, universe] = gu
            gu = full
        return loss.mul_(tau * tau), gu.mul_(tau)

    return chunked_row_loss(student_logits, None, (b, t), None, w, row_fn, chunk_size)


# --------------------------------------------------------------------------- storage


def _compress(tensors: Mapping[str, Tensor], metadata: Mapping[str, str], level: int) -> bytes:
    import zstandard
    from safetensors.torch import save

    raw = save({k: v.contiguous() for k, v in tensors.items()}, metadata=dict(metadata))
    return zstandard.ZstdCompressor(level=level).compress(raw)


def read_shard(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """A shard's tensors and metadata (decompressed in memory)."""
    import zstandard
    from safetensors.torch import load

    raw = zstandard.ZstdDecompressor().decompress(Path(path).read_bytes())
    header_len = int.from_bytes(raw[:8], "little")  # safetensors: u64 header length, JSON header, data
    meta = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {})
    return load(raw), meta


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors.zst"


def _cache_key(settings: Mapping) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def resolve_data(data: str) -> Path:
    """``--data``: a prepared dataset directory, or ``builtin`` (the default train run's prepared built-in corpus)."""
    if data == "builtin":
        from distillm_edge.models import load_tokenizer
        from distillm_edge.training.config import TrainConfig
        from distillm_edge.training.trainer import prepared_data

        default = TrainConfig()
        return prepared_data(default, load_tokenizer(default.student.model, progress=False))
    return Path(data).expanduser()


def dataset_hash(path: Path) -> str:
    """sha256 over a prepared dataset's files (the arrow data and the split/info JSON)."""
    from distillm_edge.io import sha256_dir

    return sha256_dir(Path(path), patterns=("*.json", "*/*.arrow", "*/*.json"))


# --------------------------------------------------------------------------- building


def _settings(cfg: CacheConfig, data: Path, teacher_tok, student_tok, cross: bool) -> dict:
    from distillm_edge.io import sha256_dir
    from distillm_edge.models import local_dir
    from distillm_edge.training.cross_tokenizer import tokenizer_hash

    where = local_dir(cfg.teacher, progress=cfg.progress)
    return {
        "version": CACHE_VERSION, "teacher": cfg.teacher,
        "teacher_sha256": sha256_dir(Path(where)) if Path(str(where)).is_dir() else f"hub:{where}",
        "teacher_tokenizer": tokenizer_hash(teacher_tok), "dtype": cfg.dtype,
        "student_tokenizer": tokenizer_hash(student_tok) if cross else None,
        "dataset_sha256": dataset_hash(data), "split": cfg.split, "max_examples": cfg.max_examples,
        "record_ids": None if cfg.record_ids is None else _cache_key({"ids": sorted(cfg.record_ids)}),
        "top_k": cfg.top_k, "max_length": cfg.max_length, "train_on_prompt": cfg.train_on_prompt,
        "temperatures": list(cfg.temperatures), "shard_size": cfg.shard_size,
    }


def _check_out(out: Path, settings: dict, key: str) -> None:
    path = out / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("key") != key:
            diff = [k for k in settings if old.get("settings", {}).get(k) != settings[k]]
            raise UserError(f"--out {out}: holds a cache made with other settings ({', '.join(diff) or 'version'} differ); "
                            "choose another --out, or delete it to rebuild.")
    elif out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out}: not empty and holds no {MANIFEST}; choose an empty or new folder.")


def run(cfg: CacheConfig) -> dict:
    """Build (or resume) the cache described by ``cfg``; returns the final manifest."""
    import time

    from distillm_edge.data import load_prepared
    from distillm_edge.io import atomic_path, atomic_write_json, ensure_dir, home
    from distillm_edge.models import LoadOptions, load_model, load_tokenizer
    from distillm_edge.training.batches import Example, collate, encode, ensure_chat_template
    from distillm_edge.training.cross_tokenizer import shared_vocab
    from distillm_edge.training.teachers import (
        Teacher,
        display_name,
        pad_id,
        same_vocabulary,
        teacher_forward,
    )

    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = resolve_data(cfg.data)
    dataset = load_prepared(data)
    records = []
    for split in (x.strip() for x in cfg.split.split(",") if x.strip()):
        if split not in dataset:
            raise UserError(f"--split {split}: {data} has splits {', '.join(dataset)}.")
        records += list(dataset[split])[: cfg.max_examples]
    if cfg.record_ids is not None:
        wanted = set(cfg.record_ids)
        records = [rec for rec in records if str(rec["id"]) in wanted]
    tok = load_tokenizer(cfg.teacher, progress=cfg.progress)
    ensure_chat_template(tok)
    student_tok, vocab_map = None, None
    if cfg.student:
        student_tok = load_tokenizer(cfg.student, progress=cfg.progress)
        ensure_chat_template(student_tok)
        if not same_vocabulary(student_tok, tok):
            vocab_map = shared_vocab(student_tok, tok, cache_dir=ensure_dir(home() / "cache"))
    settings = _settings(cfg, data, tok, student_tok, vocab_map is not None)
    key = _cache_key(settings)
    out = Path(cfg.out).expanduser()
    _check_out(out, settings, key)
    ensure_dir(out)
    manifest = {"key": key, "settings": settings, "complete": False}
    atomic_write_json(out / MANIFEST, manifest)
    if vocab_map is not None:
        from safetensors.torch import save_file

        with atomic_path(out / "shared_vocab.safetensors") as tmp:
            save_file({"student_ids": vocab_map[0], "teacher_ids": vocab_map[1]}, str(tmp))
    shared_ids = None if vocab_map is None else vocab_map[1]
    teacher = None
    totals = {"records": 0, "dropped": 0, "tokens": 0, "rows": 0, "bytes": 0, "raw_bytes": 0, "computed_shards": 0,
              "skipped_shards": 0}
    n_shards = math.ceil(len(records) / cfg.shard_size)
    mass_sum = [0.0] * len(cfg.temperatures)
    for si in range(n_shards):
        path = out / shard_name(si)
        meta = read_shard(path)[1] if path.is_file() else {}
        if meta.get("key") != key:
            if teacher is None:
                model, _ = load_model(cfg.teacher, LoadOptions(dtype=cfg.dtype), progress=cfg.progress)
                model.eval().requires_grad_(False)
                teacher = Teacher(0, display_name(cfg.teacher), cfg.teacher, 1.0, tok, pad_id(tok), True, model=model)
            chunk = records[si * cfg.shard_size : (si + 1) * cfg.shard_size]
            parts: dict[str, list[Tensor]] = {}
            ids, dropped = [], 0
            for rec in chunk:
                enc = encode(tok, rec, cfg.max_length, train_on_prompt=cfg.train_on_prompt)
                if enc is None:
                    dropped += 1
                    continue
                batch = collate([Example(str(rec["id"]), "", 1, enc, {})], teacher.pad_id, {})
                width = teacher.model.get_output_embeddings().weight.shape[0]
                logits = teacher_forward(teacher, batch, student_vocab=width).logits[0]
                for start in range(0, logits.shape[0], 32):  # bounded memory for 262k-wide rows
                    for k, v in summarize_rows(logits[start : start + 32], cfg.top_k, cfg.temperatures, shared_ids,
                                               batch.targets[start : start + 32]).items():
                        parts.setdefault(k, []).append(v)
                parts.setdefault("row_pos", []).append(batch.loss_mask[0].nonzero()[:, 0].to(torch.int32))
                parts.setdefault("ids", []).append(torch.tensor(enc.ids, dtype=torch.int32))
                parts.setdefault("offsets", []).append(torch.tensor(enc.offsets, dtype=torch.int32).view(-1, 2))
                parts.setdefault("special", []).append(torch.tensor(enc.special, dtype=torch.uint8))
                parts.setdefault("counted", []).append(torch.tensor(enc.counted, dtype=torch.uint8))
                parts.setdefault("meta", []).append(torch.tensor(
                    [[len(enc.ids), int(logits.shape[0]), enc.response_start, enc.first, enc.response_chars, int(enc.truncated)]],
                    dtype=torch.int32))
                ids.append(str(rec["id"]))
            tensors = {k: torch.cat(v) for k, v in parts.items()}
            if not ids:
                tensors = {"meta": torch.zeros(0, 6, dtype=torch.int32)}
            rows = int(tensors["meta"][:, 1].sum())
            mass = [0.0] * len(cfg.temperatures)
            if ids:
                mass = tail_mass(tensors["top_ids"], tensors["top_logp"], tensors["tail" if shared_ids is None else "shared_tail"],
                                 cfg.temperatures, shared_ids)
            meta = {"key": key, "record_ids": json.dumps(ids), "records": str(len(chunk)), "dropped": str(dropped),
                    "tokens": str(int(tensors["meta"][:, 0].sum())), "rows": str(rows), "tail_mass": json.dumps(mass),
                    "raw_bytes": str(sum(v.numel() * v.element_size() for v in tensors.values()))}
            blob = _compress(tensors, meta, cfg.zstd_level)
            with atomic_path(path) as tmp:
                tmp.write_bytes(blob)
            totals["computed_shards"] += 1
        else:
            totals["skipped_shards"] += 1
        for name in ("records", "dropped", "tokens", "rows", "raw_bytes"):
            totals[name] += int(meta[name])
        mass_sum = [a + b for a, b in zip(mass_sum, json.loads(meta["tail_mass"]))]
        totals["bytes"] += path.stat().st_size
        if cfg.progress:
            from rich.console import Console

            Console(stderr=True).print(f"shard {si + 1}/{n_shards}: {totals['rows']:,} rows, {totals['bytes'] / 1e6:.1f} MB")
    rows = max(1, totals["rows"])
    manifest.update(totals, complete=True, shards=n_shards, bytes_per_row=totals["bytes"] / rows,
                    raw_bytes_per_row=totals["raw_bytes"] / rows, compression=totals["raw_bytes"] / max(1, totals["bytes"]),
                    seconds=time.perf_counter() - started, config=asdict(cfg),
                    tail_mass={f"{t:g}": m / rows for t, m in zip(cfg.temperatures, mass_sum)})
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


# --------------------------------------------------------------------------- reading


@dataclass
class _Entry:
    shard: dict[str, Tensor]
    token_start: int
    n_tokens: int
    row_start: int
    n_rows: int
    meta: tuple[int, ...]  # n_tokens, n_rows, response_start, first, response_chars, truncated


class CachedTeacher:
    """A complete cache, loaded into memory (decompressed), looked up by record id."""

    def __init__(self, path: Path, manifest: dict, entries: dict[str, _Entry], vocab_map: tuple[Tensor, Tensor] | None):
        self.path, self.manifest, self.entries, self.vocab_map = path, manifest, entries, vocab_map
        self.temperatures = tuple(manifest["settings"]["temperatures"])

    @classmethod
    def open(cls, path: str | Path, *, data_dir: str | Path | None = None, student_tokenizer=None,
             train_on_prompt: bool | None = None) -> CachedTeacher:
        path = Path(path).expanduser()
        if not (path / MANIFEST).is_file():
            raise UserError(f"{path}: no teacher cache here ({MANIFEST} missing); build it with `distillm-edge teachers cache`.")
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        settings = manifest.get("settings", {})
        if settings.get("version") != CACHE_VERSION:
            raise UserError(f"{path}: cache version {settings.get('version')} (this build reads {CACHE_VERSION}); rebuild it.")
        if not manifest.get("complete"):
            raise UserError(f"{path}: the cache is incomplete; run the same `distillm-edge teachers cache` again to finish it.")
        if data_dir is not None and dataset_hash(Path(data_dir).expanduser()) != settings["dataset_sha256"]:
            raise UserError(f"{path}: cached for another dataset than {data_dir}; rebuild with --data {data_dir}.")
        if train_on_prompt is not None and bool(settings["train_on_prompt"]) != bool(train_on_prompt):
            raise UserError(f"{path}: cached with train_on_prompt={settings['train_on_prompt']}, the run uses {train_on_prompt}.")
        vocab_map = None
        if (path / "shared_vocab.safetensors").is_file():
            from safetensors.torch import load_file

            v = load_file(str(path / "shared_vocab.safetensors"))
            vocab_map = (v["student_ids"].long(), v["teacher_ids"].long())
            if student_tokenizer is not None:
                from distillm_edge.training.cross_tokenizer import tokenizer_hash

                if tokenizer_hash(student_tokenizer) != settings["student_tokenizer"]:
                    raise UserError(f"{path}: its shared vocabulary was built for another student tokenizer; rebuild with "
                                    "--student naming this run's student.")
        entries: dict[str, _Entry] = {}
        for si in range(manifest["shards"]):
            tensors, meta = read_shard(path / shard_name(si))
            tok = row = 0
            for j, rid in enumerate(json.loads(meta["record_ids"])):
                m = tuple(int(x) for x in tensors["meta"][j])
                entries[rid] = _Entry(tensors, tok, m[0], row, m[1], m)
                tok, row = tok + m[0], row + m[1]
        return cls(path, manifest, entries, vocab_map)

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.entries

    def score(self, example, student_logits: Tensor) -> dict[str, float]:
        """Held-out sums for one example from the cache (``report.evaluate``'s per-teacher numbers, at τ = 1).

        ``nll``: the teacher's NLL of its own counted tokens (within the text the student saw): exact, from
        the cached target log-probs. ``kl``/``kl_rows``: summed KL(teacher || student) over the rows the
        online evaluation uses, on top-k ∪ {tail} (a lower bound of the online KL: see the module docstring).
        ``aligned``/``mass`` (another tokenizer): aligned rows and the teacher's probability on the shared
        vocabulary there. ``student_logits``: the example's flat rows [1, N, V].
        """
        e = self._entry(example.id)
        if "target_logp" not in e.shard:
            raise UserError(f"{self.path}: built before target log-probs were cached; rebuild it.")
        s = example.student
        same = self.vocab_map is None
        n_ids = len(s.ids) if same else len(self.encoding(example.id, s.response_chars if s.truncated else None).ids)
        sl = slice(e.row_start, e.row_start + e.n_rows)
        keep = e.shard["row_pos"][sl] < n_ids - 1
        out = {"nll": -float(e.shard["target_logp"][sl][keep].double().sum())}
        rows = self.rows_for([example])
        out["kl"] = float(cached_kd_loss(student_logits, rows, temperature=1.0, normalizer=1.0, vocab_map=self.vocab_map))
        out["kl_rows"] = int(rows.student_rows.numel())
        if not same:
            t_ids = self.vocab_map[1]
            top_max = int(rows.top_ids.max()) if rows.top_ids.numel() else 0
            shared = torch.zeros(max(int(t_ids.max()), top_max) + 1, dtype=torch.bool)
            shared[t_ids] = True
            top = rows.top_logp.masked_fill(~shared[rows.top_ids], float("-inf"))
            both = torch.cat([top, tail_at(rows.tail, self.temperatures, 1.0).unsqueeze(1)], dim=1)
            out["aligned"], out["mass"] = out["kl_rows"], float(torch.logsumexp(both, dim=1).exp().sum())
        return out

    def _entry(self, record_id: str) -> _Entry:
        try:
            return self.entries[record_id]
        except KeyError:
            raise UserError(f"{self.path}: record {record_id} is not in the cache (another split or --max-examples?); "
                            "rebuild the cache for this run's data.") from None

    def encoding(self, record_id: str, max_response_chars: int | None = None):
        """The teacher's ``batches.Encoded`` of a record, cut like ``batches.encode(max_response_chars=...)``."""
        from distillm_edge.training.batches import Encoded

        e = self._entry(record_id)
        sl = slice(e.token_start, e.token_start + e.n_tokens)
        ids, offsets = e.shard["ids"][sl].tolist(), [tuple(o) for o in e.shard["offsets"][sl].tolist()]
        _, _, start, first, chars, truncated = e.meta
        n = len(ids)
        if max_response_chars is not None:
            while n and offsets[n - 1][1] - start > max_response_chars:
                n -= 1
        counted = [bool(c) for c in e.shard["counted"][sl].tolist()[:n]]
        special = [bool(c) for c in e.shard["special"][sl].tolist()[:n]]
        return Encoded(tuple(ids[:n]), tuple(counted), tuple(offsets[:n]), tuple(special), start, first, chars,
                       bool(truncated) or n < len(ids))

    def rows_for(self, examples: Sequence) -> CachedRows:
        """The cached rows matching the student's flat rows of a batch of ``examples`` (batch order)."""
        from distillm_edge.training.batches import align

        same = self.vocab_map is None
        tail_name = "tail" if same else "shared_tail"
        picks: list[tuple[int, dict[str, Tensor], int]] = []  # (student row, shard, cached row)
        offset = unmatched = 0
        for ex in examples:
            s = ex.student
            loss_pos = [t for t in range(len(s.ids) - 1) if s.counted[t + 1]]
            e = self._entry(ex.id)
            row_of = {int(p): r for r, p in enumerate(e.shard["row_pos"][e.row_start : e.row_start + e.n_rows].tolist())}
            if same:
                cached_ids = tuple(e.shard["ids"][e.token_start : e.token_start + min(e.n_tokens, len(s.ids))].tolist())
                if cached_ids != s.ids[: len(cached_ids)]:
                    raise UserError(f"{self.path}: record {ex.id} was tokenized differently when cached (another chat "
                                    "template or tokenizer); rebuild the cache with this run's teacher.")
                missing = [t for t in loss_pos if t not in row_of]
                if missing:
                    raise UserError(f"{self.path}: record {ex.id} has no cached row at position {missing[0]} (cached with "
                                    f"max_length={self.manifest['settings']['max_length']}, "
                                    f"train_on_prompt={self.manifest['settings']['train_on_prompt']}); rebuild to match the run.")
                pairs = [(j, row_of[t]) for j, t in enumerate(loss_pos)]
            else:
                t_enc = self.encoding(ex.id, s.response_chars if s.truncated else None)
                s_pos, t_pos = align(s, t_enc)
                index_of = {t: j for j, t in enumerate(loss_pos)}
                pairs = [(index_of[a], row_of[b]) for a, b in zip(s_pos, t_pos) if a in index_of and b in row_of]
                unmatched += len(loss_pos) - len(pairs)
            picks.extend((offset + j, e.shard, e.row_start + r) for j, r in pairs)
            offset += len(loss_pos)
        k = len(next(iter(self.entries.values())).shard["top_ids"][0]) if self.entries else 1
        g = len(self.temperatures)
        if not picks:
            return CachedRows(torch.zeros(0, dtype=torch.long), torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k),
                              torch.zeros(0, g, 2), self.temperatures, unmatched)
        groups: dict[int, tuple[dict, list[int], list[int]]] = {}
        for srow, shard, crow in picks:
            groups.setdefault(id(shard), (shard, [], []))[1].append(srow)
            groups[id(shard)][2].append(crow)
        rows, top_ids, top_logp, tails = [], [], [], []
        for shard, srows, crows in groups.values():
            idx = torch.tensor(crows)
            rows.append(torch.tensor(srows))
            top_ids.append(shard["top_ids"][idx].long())
            top_logp.append(shard["top_logp"][idx].float())
            tails.append(shard[tail_name][idx].float())
        return CachedRows(torch.cat(rows), torch.cat(top_ids), torch.cat(top_logp), torch.cat(tails), self.temperatures,
                          unmatched)
