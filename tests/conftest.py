"""Shared pytest fixtures: the real data folder, the embedded models, tiny random models.

- ``shared_data``: ``../shared/data`` (or ``$DISTILLM_EDGE_SHARED_DATA``); tests skip with a
  reason when it is absent.
- ``smollm2_dir`` / ``gemma_dir``: the embedded models materialized once into the cache
  (``$DISTILLM_EDGE_HOME``, default ``<repo>/.home`` for tests so runs reuse it).
- ``tiny_llama_dir``: a 2-layer random Llama checkpoint with SmolLM2's real tokenizer, saved as a
  normal Hugging Face directory, for fast unit tests of anything that takes a checkpoint.

Run: ``pytest`` (all), ``pytest -m "not slow"`` (unit tests only).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DISTILLM_EDGE_HOME", str(REPO / ".home"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("DISTILLM_EDGE_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent (set DISTILLM_EDGE_SHARED_DATA to run this test)")
    return path


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from distillm_edge.models import local_dir

    return Path(local_dir("smollm2-135m-instruct", progress=False))


@pytest.fixture(scope="session")
def gemma_dir() -> Path:
    from distillm_edge.models import local_dir

    return Path(local_dir("gemma-3-270m", progress=False))


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A 2-layer, 64-wide random Llama with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(smollm2_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=smollm2_tokenizer.bos_token_id, eos_token_id=smollm2_tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(out)
    smollm2_tokenizer.save_pretrained(out)
    return out
