"""Fixtures for the data pipeline tests: the real shared data folder and a tiny tokenizer.

``shared_data`` is ``$DISTILLM_EDGE_SHARED_DATA`` or ``../shared/data`` next to the repository;
tests that need it skip with a reason when it is absent. ``tiny_tokenizer`` is a word-level fast
tokenizer (one token per whitespace-separated word) so truncation counts are easy to reason about.

Run: ``pytest tests/data``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path | None:
    env = os.environ.get("DISTILLM_EDGE_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real data not found: set DISTILLM_EDGE_SHARED_DATA or provide ../shared/data next to the repo")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch):
    """Tests never reach the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
