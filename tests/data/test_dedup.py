"""Exact and near-duplicate removal: planted duplicates are found, distinct items kept; the
vectorized MinHash equals datasketch's and the LSH result matches a brute-force Jaccard check.

Run: ``pytest tests/data/test_dedup.py``.
"""

from __future__ import annotations

import json
import random

import numpy as np
from datasketch import MinHash

from distillm_edge.data.dedup import (
    NearDuplicates,
    exact_dedup,
    near_dedup,
    shingle_hash_naive,
    shingle_hashes,
)
from distillm_edge.data.records import Record
from distillm_edge.data.report import Report

VOCAB = [f"term{i}" for i in range(3000)]


def text(rng: random.Random, n: int = 60) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def rec(i, instruction, response, input=""):
    return Record(f"t:{i}", instruction, input, response, "t")


def test_shingle_hashes_equal_naive_and_handle_short_lists():
    words = "the patient presented with acute chest pain radiating to the left arm".split()
    hashes, offsets = shingle_hashes([words, words[:3], ["é", "ß"]], 5)
    assert offsets.tolist() == [0, 8, 9, 10]
    expected = [shingle_hash_naive(words[i : i + 5]) for i in range(8)] + [shingle_hash_naive(words[:3]), shingle_hash_naive(["é", "ß"])]
    assert hashes.tolist() == expected


def test_signature_equals_datasketch_minhash():
    index = NearDuplicates(num_perm=64, shingle_size=3)
    rng = random.Random(0)
    lists = [text(rng, rng.randint(1, 40)).split() for _ in range(5)]
    signatures = index.signatures(lists)
    hashes, offsets = shingle_hashes(lists, 3)
    for row, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
        reference = MinHash(num_perm=64, seed=1, hashfunc=lambda x: x)
        reference.update_batch([int(h) for h in hashes[lo:hi]])
        assert np.array_equal(signatures[row], reference.hashvalues)


def test_exact_dedup_ignores_case_space_punctuation():
    report = Report()
    items = [rec(1, "What is Asthma?", "Airway disease."), rec(2, "what is   asthma", "airway disease"), rec(3, "What is COPD?", "Airway disease.")]
    kept = list(exact_dedup(items, report))
    assert [r.id for r in kept] == ["t:1", "t:3"]
    assert report.examples["exact_duplicate"][0]["matched"] == "t:1"


def test_near_dedup_finds_planted_and_keeps_distinct():
    rng = random.Random(1)
    base = [rec(i, f"Question {i}: " + text(rng, 12), text(rng, 60)) for i in range(300)]
    planted = []
    for j, b in enumerate(base[:40]):
        words = b.response.split()
        words[rng.randrange(len(words))] = "changed"  # one edit: Jaccard of 5-shingles about 0.85
        planted.append(rec(1000 + j, b.instruction, " ".join(words)))
    report = Report()
    items = base[:150] + planted + base[150:]
    kept = list(near_dedup(items, report, threshold=0.7, num_perm=128, shingle_size=5, batch=64))
    removed = {e for e in (r.id for r in items)} - {r.id for r in kept}
    assert removed == {p.id for p in planted}
    assert report.near_clusters[base[0].id] == 1


def test_near_dedup_agrees_with_brute_force_jaccard(tmp_path):
    """Every removal matched a kept record of true Jaccard >= threshold - 0.15; no two kept records
    have true Jaccard >= threshold + 0.15 (MinHash is an estimate, so only a margin is exact)."""
    rng = random.Random(2)
    pool = [text(rng, 30).split() for _ in range(40)]
    items = []
    for i in range(120):  # overlapping variants: a prefix of a pool item plus a random tail
        src = rng.choice(pool)
        keep = rng.randint(15, 30)
        items.append(rec(i, "q", " ".join(src[:keep] + text(rng, 30 - keep).split())))
    threshold, size, margin = 0.6, 3, 0.15
    report = Report(tmp_path / "removals.jsonl")
    kept = list(near_dedup(list(items), report, threshold=threshold, num_perm=256, shingle_size=size))
    report.close()

    def shingles(r):
        w = ["q", *r.response.lower().split()]
        return {tuple(w[i : i + size]) for i in range(len(w) - size + 1)}

    def jaccard(a, b):
        return len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))

    by_id = {r.id: r for r in items}
    removals = [json.loads(line) for line in (tmp_path / "removals.jsonl").read_text().splitlines()]
    assert 10 <= len(kept) <= 110 and report.removed["near_duplicate"] == len(items) - len(kept)
    for entry in removals:
        assert jaccard(by_id[entry["id"]], by_id[entry["matched"]]) >= threshold - margin
    for i, a in enumerate(kept):
        for b in kept[:i]:
            assert jaccard(a, b) < threshold + margin
