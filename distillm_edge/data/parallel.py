"""Per-record work on worker processes: what the stages would compute, done ahead, in batches.

The CPU-heavy part of the stages does not depend on other records: cleaning and the
empty/short check, normalized words, the exact-duplicate digest, the benchmark check, the
MinHash signature and (when abbreviations are not expanded) the tags. :func:`precompute` runs it
on ``workers`` processes, one batch of records at a time, and stores the results in
``record.memo``; the stages then only take the decisions that need the whole stream (first
occurrence kept, the LSH index, logging) in the main process, in input order, so the output is
identical to the serial path (tested). At most ``2 * workers`` batches are in flight, so memory
stays bounded. The pool starts only when a second batch arrives: small corpora never pay for
process start-up.

Test: ``pytest tests/data/test_pipeline.py -k parallel``.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator

from distillm_edge.data.records import Record

BATCH = 1024
_STATE: dict = {}


def default_workers() -> int:
    """One process per core left over by the main process, at most 4 (the main process is then the bottleneck)."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def _init(bench, num_perm: int, shingle_size: int, tag_records: bool) -> None:
    from distillm_edge.data.dedup import NearDuplicates

    _STATE.update(bench=bench, signer=NearDuplicates(num_perm=num_perm, shingle_size=shingle_size), tag_records=tag_records)


def _work(batch: list[Record]) -> list[Record]:
    return prepare_batch(batch, **_STATE)


def prepare_batch(batch: list[Record], bench, signer, tag_records: bool) -> list[Record]:
    """Fill ``record.memo`` (short, exact, bench, signature) and, optionally, the tags."""
    from distillm_edge.data.clean import clean_record, too_short
    from distillm_edge.data.decontaminate import record_words
    from distillm_edge.data.dedup import add_signatures, exact_key
    from distillm_edge.data.tagging import tag

    live = []
    for record in batch:
        clean_record(record)
        record.memo["short"] = too_short(record)
        if not record.memo["short"]:
            record.memo["exact"] = exact_key(record)
            live.append(record)
    if bench is not None:
        for record, hit in zip(live, bench.match_many([record_words(r) for r in live]), strict=True):
            record.memo["bench"] = hit
    add_signatures(live, signer)
    if tag_records:
        for _ in tag(live):
            pass
    for record in batch:
        record.words = None  # cheaper to recompute than to send back
    return batch


def precompute(
    records: Iterable[Record], workers: int, bench, num_perm: int, shingle_size: int, tag_records: bool, batch: int | None = None
) -> Iterator[Record]:
    """Yield ``records`` in order with their ``memo`` filled by a pool of ``workers`` processes (0: no pool)."""
    batch = batch or BATCH
    if workers < 1:
        yield from records
        return
    from concurrent.futures import ProcessPoolExecutor

    stream = iter(records)
    first = list(itertools.islice(stream, batch))
    if len(first) < batch:
        yield from first  # a single batch: the stages compute it themselves
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init, initargs=(bench, num_perm, shingle_size, tag_records)) as pool:
        pending = deque([pool.submit(_work, first)])
        while chunk := list(itertools.islice(stream, batch)):
            pending.append(pool.submit(_work, chunk))
            while len(pending) > 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
