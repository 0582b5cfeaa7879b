"""Every output shape of ``data prepare`` loads with the standard loader ``datasets.load_from_disk``:
both splits filled, ``--valid-fraction 0`` (an empty ``valid``) and an empty ``train`` (a tiny corpus
whose records all hash into ``valid``); the consumers in this codebase that read a prepared folder
(``load_prepared``, eval's generation loader) accept it or say clearly what is missing.

Run: ``pytest tests/data/test_output_shapes.py``.
"""

from __future__ import annotations

import json

import datasets
import pytest

from distillm_edge.data import COLUMNS, PrepareConfig, builtin_corpus_path, load_prepared, run
from distillm_edge.data.output import split_of
from distillm_edge.errors import UserError

BUILTIN = [json.loads(x) for x in builtin_corpus_path().read_text(encoding="utf-8").splitlines() if x.strip()]
BUILTIN_N = len(BUILTIN)  # the embedded corpus grows (issue 12)


def prepare(tmp_path, name: str, **kw) -> dict:
    return run(PrepareConfig(out=str(tmp_path / name), max_tokens=0, progress=False, workers=0, **kw))


def test_valid_fraction_zero_writes_a_loadable_empty_valid_split(tmp_path):
    stats = prepare(tmp_path, "out", valid_fraction=0.0)
    assert stats["final"]["splits"] == {"train": BUILTIN_N, "valid": 0}
    data = datasets.load_from_disk(str(tmp_path / "out"))  # the standard loader, as a user would call it
    assert len(data["train"]) == BUILTIN_N and len(data["valid"]) == 0
    assert data["valid"].column_names == list(COLUMNS) and data["valid"].features == data["train"].features
    assert len(load_prepared(tmp_path / "out")["valid"]) == 0


def test_empty_train_split_loads_too(tmp_path):
    # one record whose id ("one:<id>": the file's name is its source) hashes into valid: train is empty
    rid = next(f"q{i}" for i in range(1000) if split_of(f"one:q{i}", 0, 0.5) == "valid")
    (tmp_path / "one.jsonl").write_text(json.dumps({"id": rid, "question": "What is gout and how is it treated?",
                                                    "answer": "A crystal arthritis treated with colchicine or NSAIDs."}) + "\n")
    stats = prepare(tmp_path, "out", inputs=(str(tmp_path / "one.jsonl"),), valid_fraction=0.5)
    assert stats["final"]["splits"] == {"train": 0, "valid": 1}
    data = datasets.load_from_disk(str(tmp_path / "out"))
    assert len(data["train"]) == 0 and len(data["valid"]) == 1


def test_generation_loader_names_the_empty_split(tmp_path):
    from distillm_edge.eval.generation import load_instructions

    prepare(tmp_path, "out", valid_fraction=0.0)
    with pytest.raises(UserError, match=r"'valid' split is empty"):
        load_instructions(tmp_path / "out")
