"""Writing the prepared dataset: seeded train/valid split, Arrow spill, ``save_to_disk``, atomic
replacement of ``--out``.

Records stream into two Arrow IPC files (train / valid) in batches, so memory stays flat; they
are then opened memory-mapped as ``datasets.Dataset`` objects and saved as one ``DatasetDict``.
Both splits are always written; an empty one (``--valid-fraction 0``) is one empty shard with
the same columns, so ``datasets.load_from_disk`` loads every output.
The split is a function of ``(seed, id)`` alone (BLAKE2b → uniform number < ``valid_fraction``
goes to valid): the same record lands in the same split whatever else is in the corpus, and
the split is stable across runs.

The whole output is built in a hidden temporary folder next to ``--out`` and renamed into place
at the end; a non-empty existing ``--out`` is refused unless ``overwrite`` (then it is replaced
in one rename, the old folder removed after).

Test: ``pytest tests/data/test_pipeline.py``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from distillm_edge.data.records import COLUMNS, Record
from distillm_edge.errors import UserError

SPLITS = ("train", "valid")
BATCH = 2048


def features():
    import datasets

    return datasets.Features(
        {c: datasets.Value("int64" if c == "difficulty" else "string") for c in COLUMNS}
    )


def split_of(record_id: str, seed: int, valid_fraction: float) -> str:
    digest = hashlib.blake2b(f"{seed}:{record_id}".encode(), digest_size=8).digest()
    return "valid" if int.from_bytes(digest, "little") / 2**64 < valid_fraction else "train"


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty existing ``--out`` unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is a file; choose a folder path.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out}: already exists and is not empty; pass --overwrite to replace it, or choose another --out.")


def temp_dir_beside(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def replace_dir(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` folder to ``out`` (replacing an old one only with ``overwrite``)."""
    check_out(out, overwrite)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_splits(records: Iterable[Record], folder: Path, valid_fraction: float, seed: int) -> dict:
    """Write records as a DatasetDict into ``folder``; return counts per split/source/specialty/difficulty."""
    import datasets
    import pyarrow as pa

    feats = features()
    schema = feats.arrow_schema
    spill = Path(tempfile.mkdtemp(prefix=".spill-", dir=folder))
    counts = {"splits": Counter({s: 0 for s in SPLITS}), "source": Counter(), "specialty": Counter(), "difficulty": Counter()}
    writers = {s: pa.ipc.new_stream(str(spill / f"{s}.arrow"), schema) for s in SPLITS}
    columns: dict[str, dict[str, list]] = {s: {c: [] for c in COLUMNS} for s in SPLITS}

    def flush(split: str) -> None:
        buf = columns[split]
        if buf["id"]:
            writers[split].write_batch(pa.RecordBatch.from_arrays([pa.array(buf[c], type=schema.field(c).type) for c in COLUMNS], schema=schema))
            counts["splits"][split] += len(buf["id"])
            for key in ("source", "specialty", "difficulty"):
                counts[key].update(buf[key])
            columns[split] = {c: [] for c in COLUMNS}

    try:
        for record in records:
            split = split_of(record.id, seed, valid_fraction)
            buf = columns[split]
            for c in COLUMNS:
                buf[c].append(getattr(record, c))
            if len(buf["id"]) >= BATCH:
                flush(split)
        for split in SPLITS:
            flush(split)
    finally:
        for writer in writers.values():
            writer.close()
    total = sum(counts["splits"].values())
    if total:
        dataset = datasets.DatasetDict(
            {s: datasets.Dataset.from_file(str(spill / f"{s}.arrow")) for s in SPLITS}
        )
        # an empty split saved with datasets' default (0 shards) cannot be loaded back (IndexError in
        # load_from_disk): write one empty shard, so every split loads, with the same columns
        empty = {s: 1 for s in SPLITS if counts["splits"][s] == 0}
        dataset.save_to_disk(str(folder), num_shards=empty or None)
        del dataset
    shutil.rmtree(spill, ignore_errors=True)
    return {
        "total": total,
        "splits": dict(counts["splits"]),
        "per_source": dict(counts["source"].most_common()),
        "per_specialty": dict(counts["specialty"].most_common()),
        "per_difficulty": {int(k): v for k, v in sorted(counts["difficulty"].items())},
    }
