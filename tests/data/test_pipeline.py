"""The whole ``data prepare`` pipeline: outputs, split, atomic/overwrite rules, stage counts,
decontamination and truncation in place; slow tests run the real tokenizer and all shared data.

Run: ``pytest tests/data/test_pipeline.py`` (add ``-m slow`` for the end-to-end runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillm_edge.data import COLUMNS, PrepareConfig, builtin_corpus_path, load_prepared, run
from distillm_edge.errors import UserError

BUILTIN = [json.loads(x) for x in builtin_corpus_path().read_text(encoding="utf-8").splitlines() if x.strip()]
BUILTIN_N = len(BUILTIN)  # the embedded corpus grows (issue 12); every record must survive the pipeline


def cfg(tmp_path: Path, **kw) -> PrepareConfig:
    return PrepareConfig(out=str(tmp_path / "out"), max_tokens=0, progress=False, **kw)


def test_builtin_corpus_end_to_end(tmp_path):
    stats = run(cfg(tmp_path))
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {"dataset_dict.json", "train", "valid", "stats.json", "DATA_CARD.md", "removals.jsonl", "config.yaml"}
    data = load_prepared(out)
    assert set(data) == {"train", "valid"} and data["train"].column_names == list(COLUMNS)
    assert data["train"].features["difficulty"].dtype == "int64"
    total = len(data["train"]) + len(data["valid"])
    assert total == stats["final"]["total"] == stats["read"]["total"] - sum(stats["removed"].values()) == BUILTIN_N
    assert 0.04 < len(data["valid"]) / total < 0.16
    assert json.loads((out / "stats.json").read_text())["final"]["per_source"] == {"builtin": BUILTIN_N}
    card = (out / "DATA_CARD.md").read_text()
    assert f"| builtin | {BUILTIN_N:,} | {BUILTIN_N:,} |" in card  # the card prints thousands separators
    assert f"| 4 | treatment_planning | {sum(r['difficulty'] == 4 for r in BUILTIN):,} |" in card
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_split_is_seeded_and_stable(tmp_path):
    run(cfg(tmp_path / "a"))
    run(cfg(tmp_path / "b"))
    run(cfg(tmp_path / "c", seed=7))
    ids = {k: sorted(load_prepared(tmp_path / k / "out")["valid"]["id"]) for k in "abc"}
    assert ids["a"] == ids["b"] and ids["a"] != ids["c"]


def test_refuses_non_empty_out_unless_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="already exists and is not empty; pass --overwrite"):
        run(cfg(tmp_path))
    run(cfg(tmp_path, overwrite=True))
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "stats.json").exists()


def test_bad_options_are_user_errors(tmp_path):
    for kw in ({"valid_fraction": 1.5}, {"max_tokens": 8}, {"near_threshold": 0}, {"columns": {"question": "Q"}}):
        with pytest.raises(UserError):
            PrepareConfig(out=str(tmp_path / "out"), **kw)


def test_stages_on_a_planted_corpus(tmp_path, tiny_tokenizer):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "anatomy_val.csv").write_text("What is the sternal angle?,A,B,C,D,A\n", encoding="utf-8")
    long_context = " ".join(f"ctx{i}" for i in range(400))
    rows = [
        {"id": "a", "question": "What does the thyroid gland make?", "answer": "Thyroid hormones T4 and T3."},
        {"id": "b", "question": "what does the thyroid gland make", "answer": "thyroid hormones t4 and t3"},  # exact dup
        {"id": "c", "question": "Quiz: what is the sternal angle? Explain.", "answer": "The junction of manubrium and body."},
        {"id": "d", "question": "Summarize the passage about the heart.", "context": long_context, "answer": "It is long."},
        {"id": "e", "question": "?", "answer": "."},  # trivially short
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    stats = run(PrepareConfig(inputs=(str(path),), decontaminate=(str(bench),), out=str(tmp_path / "out"), max_tokens=64, progress=False),
                tokenizer=tiny_tokenizer)
    removed = stats["removed"]
    assert (removed["exact_duplicate"], removed["decontaminated"], removed["empty_or_short"]) == (1, 1, 1)
    assert stats["decontaminated"]["items"][0]["matched"] == "mmlu:anatomy_val:1"
    assert stats["truncation"]["context_truncated"] == 1
    data = load_prepared(tmp_path / "out")
    kept = {r["id"]: r for split in data.values() for r in split}
    assert set(kept) == {"train:a", "train:d"}
    assert len(kept["train:d"]["input"].split()) == 64 - 6 - 3


@pytest.mark.slow
def test_default_run_with_real_tokenizer(tmp_path):
    stats = run(PrepareConfig(out=str(tmp_path / "out"), progress=False))
    assert stats["final"]["total"] == BUILTIN_N and stats["truncation"]["tokenizer"] == "smollm2-135m-instruct"


@pytest.mark.slow
def test_all_shared_data_with_decontamination(tmp_path, shared_data):
    sources = ["medquad", "pubmedqa", "medmcqa", "medqa", "covidqa", "medalpaca", "chatdoctor"]
    stats = run(PrepareConfig(inputs=tuple(str(shared_data / s) for s in sources), decontaminate=(str(shared_data / "mmlu/val"),),
                              out=str(tmp_path / "out"), progress=False))
    assert stats["read"]["total"] == 38679 and stats["removed"]["malformed"] == 0
    assert stats["removed"]["exact_duplicate"] >= 4000  # the 4k sample is a subset of the full MedQuAD file
    assert 0 < stats["removed"]["decontaminated"] < 50 and stats["removed"]["near_duplicate"] > 500
    assert stats["final"]["total"] == stats["read"]["total"] - sum(stats["removed"].values())
    assert len(stats["final"]["per_specialty"]) >= 13


def test_parallel_workers_give_the_same_output(tmp_path, shared_data):
    """Worker processes only compute ahead; decisions and output are identical to the serial path."""
    from distillm_edge.data import parallel

    lines = (shared_data / "medquad/medquad_sample4k.jsonl").read_text(encoding="utf-8").splitlines()[:1200]
    rows = [json.loads(line) for line in lines]
    for k, row in enumerate(rows[:150]):  # plant exact and near duplicates
        copy = dict(row, id=f"dup{k}")
        if k % 2:
            copy["answer"] = copy["answer"].replace(" the ", " a ", 1)
        rows.append(copy)
    mmlu = (shared_data / "mmlu/val/professional_medicine_val.csv").read_text(encoding="utf-8")
    long_question = next(q for q in (line.split(",")[0].strip('"') for line in mmlu.splitlines()) if len(q.split()) > 40)
    rows.insert(500, {"id": "leak", "question": "Case: " + long_question, "answer": "An answer long enough."})  # n-gram match
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    common = {"inputs": (str(corpus),), "decontaminate": (str(shared_data / "mmlu/val"),), "max_tokens": 0, "progress": False}
    original = parallel.BATCH
    parallel.BATCH = 128  # several batches in flight
    try:
        serial = run(PrepareConfig(out=str(tmp_path / "s"), workers=0, **common))
        pooled = run(PrepareConfig(out=str(tmp_path / "p"), workers=2, **common))
    finally:
        parallel.BATCH = original
    assert serial["removed"] == pooled["removed"] and serial["final"] == pooled["final"]
    assert serial["removed"]["exact_duplicate"] >= 75 and serial["removed"]["near_duplicate"] >= 60
    assert "medquad:leak" in {d["id"] for d in pooled["decontaminated"]["items"]}
    a, b = load_prepared(tmp_path / "s"), load_prepared(tmp_path / "p")
    for split in ("train", "valid"):
        assert a[split].to_list() == b[split].to_list()
    assert (tmp_path / "s" / "removals.jsonl").read_text() == (tmp_path / "p" / "removals.jsonl").read_text()
