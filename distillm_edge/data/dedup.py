"""Deduplication: exact (hash of the normalized text) and near-duplicate (MinHash LSH).

Both keep the *first* occurrence (input order) and drop later ones, logging which kept record
each one duplicates. Both compare :func:`~distillm_edge.data.records.match_words` (NFKC,
casefolded, punctuation-free words), so case, spacing and punctuation never hide a duplicate.

- **Exact**: an 8-byte BLAKE2b digest of instruction / input / response words. State: one dict
  entry (digest → kept id) per kept record.
- **Near**: word shingles (``shingle_size`` consecutive words, default 5) of instruction +
  response. The context (``input``) is left out on purpose: COVID-QA asks many different
  questions about the same paper, which would otherwise all look alike. Each record gets a
  ``num_perm``-value MinHash signature computed with numpy in one shot; the numbers are exactly
  those of ``datasketch.MinHash`` (scheme ``affine32``, same seed) fed the same shingle hashes
  (tested). The signature is looked up in a ``datasketch.MinHashLSH`` index whose banding
  datasketch picks for ``threshold`` with weights favouring recall (:data:`LSH_WEIGHTS`: with 64
  permutations, 8 bands of 8 rows instead of 5 of 11, so a true Jaccard of 0.9 becomes a candidate
  with probability 0.99 instead of 0.85); each candidate is then confirmed by its estimated
  Jaccard similarity (share of equal signature values) ≥ ``threshold``, so the extra candidates
  cost a little time, not precision. State per kept record: one int per band in the LSH tables
  (~1 KB for 8 bands) and its signature (num_perm × 4 bytes).

Test: ``pytest tests/data/test_dedup.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import numpy as np

from distillm_edge.data.records import Record
from distillm_edge.data.report import Report


def exact_key(record: Record) -> int:
    """Digest of the normalized (instruction, input, response) words."""
    text = "\x1f".join(" ".join(words) for words in record.match())
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def exact_dedup(records: Iterable[Record], report: Report) -> Iterator[Record]:
    """Drop records whose normalized text equals an earlier record's."""
    seen: dict[int, str] = {}
    for record in records:
        key = record.memo.pop("exact", None)
        if key is None:
            key = exact_key(record)
        kept = seen.get(key)
        if kept is not None:
            report.remove(record, "exact_duplicate", "same normalized text as an earlier record", kept)
        else:
            seen[key] = record.id
            yield record


LSH_WEIGHTS = (0.2, 0.8)  # (false positive, false negative) weights for datasketch's banding choice
_P = np.uint64(0x100000001B3)  # FNV-64 prime (odd, so invertible modulo 2**64)
_P_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))


class _Powers:
    """Cached ``P**j`` and ``P**-j`` modulo 2**64 for j < n (grown on demand)."""

    def __init__(self) -> None:
        self.pow = np.ones(1, dtype=np.uint64)
        self.inv = np.ones(1, dtype=np.uint64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.pow) < n:
            size = max(n, 2 * len(self.pow))
            self.pow = _powers(_P, size)
            self.inv = _powers(_P_INV, size)
        return self.pow[:n], self.inv[:n]


def _powers(base: np.uint64, n: int) -> np.ndarray:
    out = np.full(n, base, dtype=np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)  # wraps modulo 2**64


_POWERS = _Powers()


def shingle_hashes(word_lists: list[list[str]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of the ``size``-word shingles of each word list, computed in one numpy pass.

    A shingle's hash is the polynomial hash (base P, modulo 2**64, high 32 bits) of its words
    joined by single spaces; a list with fewer than ``size`` words is one shingle. Every list
    must be non-empty. Returns ``(hashes, offsets)``: list r's shingles are
    ``hashes[offsets[r]:offsets[r + 1]]``.
    """
    counts = np.fromiter((len(w) for w in word_lists), dtype=np.int64, count=len(word_lists))
    if counts.size == 0 or counts.min() < 1:
        raise ValueError("shingle_hashes needs non-empty word lists")
    data = np.frombuffer(" ".join(" ".join(w) for w in word_lists).encode("utf-8"), dtype=np.uint8)
    spaces = np.flatnonzero(data == 32)
    starts = np.concatenate(([0], spaces + 1))
    ends = np.concatenate((spaces, [len(data)]))
    pw, inv = _POWERS.get(len(data) + 1)
    prefix = np.zeros(len(data) + 1, dtype=np.uint64)
    np.cumsum(data.astype(np.uint64) * pw[: len(data)], out=prefix[1:])
    per_list = np.maximum(counts - size + 1, 1)
    offsets = np.concatenate(([0], np.cumsum(per_list)))
    owner = np.repeat(np.arange(len(counts)), per_list)
    i = np.arange(offsets[-1]) - offsets[owner]
    first_word = np.concatenate(([0], np.cumsum(counts)))[owner]
    lo = starts[first_word + i]
    hi = ends[first_word + np.minimum(i + size, counts[owner]) - 1]
    hashed = (prefix[hi] - prefix[lo]) * inv[lo]
    return (hashed >> np.uint64(32)).astype(np.uint32), offsets


def shingle_hash_naive(words: list[str]) -> int:
    """Reference for one shingle: the same polynomial hash in plain Python."""
    h = 0
    for j, byte in enumerate(" ".join(words).encode("utf-8")):
        h = (h + byte * pow(0x100000001B3, j, 1 << 64)) % (1 << 64)
    return h >> 32


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch's affine32 scheme applies it."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


class _Signature:
    """What ``MinHashLSH`` reads from a MinHash (len, .hashvalues, .scheme); a full ``MinHash``
    object per record would cost more than the whole signature computation."""

    __slots__ = ("hashvalues",)
    scheme = "affine32"

    def __init__(self, hashvalues: np.ndarray):
        self.hashvalues = hashvalues

    def __len__(self) -> int:
        return len(self.hashvalues)


class _BandTable:
    """One LSH band: key -> record index (an int, or a list when several records share the key).

    Stands in for datasketch's in-memory storage, which keeps a ``set`` per key (~200 bytes,
    and nearly every key holds a single record)."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[int, int | list[int]] = {}

    def insert(self, key: int, *values: int, buffer: bool = False) -> None:
        for value in values:
            held = self._d.get(key)
            if held is None:
                self._d[key] = value
            elif isinstance(held, list):
                held.append(value)
            else:
                self._d[key] = [held, value]

    def get(self, key: int) -> tuple[int, ...] | list[int]:
        held = self._d.get(key)
        return () if held is None else held if isinstance(held, list) else (held,)


def _lsh_class():
    from datasketch import MinHashLSH

    class InMemoryLSH(MinHashLSH):
        """datasketch's banding and query, with compact in-process state: a band key is the
        Python hash of its bytes (no portable byte-order copy), each band a :class:`_BandTable`,
        and no key -> bands reverse map (records are never removed)."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hashtables = [_BandTable() for _ in range(self.b)]

        def _byteswap(self, hs):
            return hash(hs.tobytes())

        def _insert(self, key, minhash, check_duplication=True, buffer=False):
            for (start, end), table in zip(self.hashranges, self.hashtables, strict=True):
                table.insert(self._H(minhash.hashvalues[start:end]), key)

    return InMemoryLSH


class NearDuplicates:
    """Near-duplicate index: :meth:`check` returns the kept id a signature duplicates, or ""."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 64, shingle_size: int = 5, seed: int = 1):
        from datasketch import MinHash

        self.threshold, self.num_perm, self.shingle_size = threshold, num_perm, shingle_size
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        self._a, self._b = a[:, None], b[:, None]
        self.lsh = _lsh_class()(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
        self._sigs = np.empty((1024, num_perm), dtype=np.uint32)
        self._ids: list[str] = []

    def signatures(self, word_lists: list[list[str]]) -> np.ndarray:
        """MinHash signatures (one uint32 row of num_perm values per non-empty word list)."""
        hashes, offsets = shingle_hashes(word_lists, self.shingle_size)
        with np.errstate(over="ignore"):
            permuted = self._a * _fmix32(hashes)[None, :] + self._b
        return np.minimum.reduceat(permuted, offsets[:-1], axis=1).T

    def check(self, signature: np.ndarray, record_id: str) -> str:
        """The id of an earlier kept near-duplicate; otherwise index this one and return ""."""
        candidates = self.lsh.query(_Signature(signature))
        if candidates:
            keys = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
            similarity = (self._sigs[keys] == signature).mean(axis=1)
            best = similarity.max()
            if best >= self.threshold:
                return self._ids[int(keys[similarity == best].min())]
        key = len(self._ids)
        if key == len(self._sigs):
            self._sigs = np.concatenate([self._sigs, np.empty_like(self._sigs)])
        self._sigs[key] = signature
        self._ids.append(record_id)
        self.lsh.insert(key, _Signature(signature), check_duplication=False)
        return ""


def near_words(record: Record) -> list[str]:
    """The words near-dedup compares: instruction + response (not the context)."""
    instruction, _, response = record.match()
    return instruction + response


def add_signatures(records: list[Record], index: NearDuplicates) -> None:
    """Store each record's signature in ``record.memo`` (None when it has no words)."""
    words = [near_words(r) for r in records]
    with_words = [i for i, w in enumerate(words) if w]
    sigs = index.signatures([words[i] for i in with_words]) if with_words else None
    for record in records:
        record.memo["signature"] = None
    for n, i in enumerate(with_words):
        records[i].memo["signature"] = sigs[n]


def near_dedup(
    records: Iterable[Record],
    report: Report,
    threshold: float = 0.8,
    num_perm: int = 64,
    shingle_size: int = 5,
    batch: int = 512,
) -> Iterator[Record]:
    """Drop records whose shingle Jaccard similarity with an earlier kept record is ≥ threshold.

    Signatures are computed ``batch`` records at a time; records are still checked one by one in
    input order, so a duplicate inside one batch is caught like any other.
    """
    index = NearDuplicates(threshold, num_perm, shingle_size)

    def flush(buffer: list[Record]) -> Iterator[Record]:
        todo = [r for r in buffer if "signature" not in r.memo]  # workers may have signed the others
        add_signatures(todo, index)
        for record in buffer:
            signature = record.memo.pop("signature")
            kept = index.check(signature, record.id) if signature is not None else ""
            if kept:
                report.remove(record, "near_duplicate", f"near-duplicate (MinHash Jaccard >= {threshold})", kept)
            else:
                yield record

    buffer: list[Record] = []
    for record in records:
        buffer.append(record)
        if len(buffer) >= batch:
            yield from flush(buffer)
            buffer = []
    if buffer:
        yield from flush(buffer)
