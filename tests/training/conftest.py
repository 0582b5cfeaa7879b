"""Fixtures for the training tests: a tiny prepared dataset and tiny random teachers (seconds to build).

- ``tiny_data``: train 24 / valid 4 records cut from the built-in corpus, saved like ``data prepare``;
- ``tiny_gemma_dir``: a 2-layer random Gemma-3 text model with the real Gemma tokenizer (262k);
- ``tiny_cross_dir``: a 2-layer random Llama with its own 1,024-token BPE (a fast cross-tokenizer teacher);
- ``tiny_wide_dir``: a 2-layer random Llama 96 wide with SmolLM2's tokenizer (hidden alignment needs a projection
  from the 64-wide ``tiny_llama_dir``).

``tiny_llama_dir`` comes from ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A prepared dataset (train 24 / valid 4) cut from the built-in corpus, written like ``data prepare``."""
    import datasets

    from distillm_edge.data import builtin_corpus_path

    rows = [json.loads(line) for line in builtin_corpus_path().read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(0).shuffle(rows)
    recs = [{"id": r["id"], "instruction": r["question"], "input": "", "response": r["answer"], "source": "builtin",
             "specialty": r["specialty"], "difficulty": r["difficulty"]} for r in rows[:28]]
    out = tmp_path_factory.mktemp("tiny_data")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(recs[:24]),
                          "valid": datasets.Dataset.from_list(recs[24:])}).save_to_disk(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory, gemma_dir) -> Path:
    """A 2-layer, 32-wide random Gemma-3 with the real Gemma tokenizer (262,144 tokens): a cross-tokenizer teacher."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(1)
    cfg = Gemma3TextConfig(vocab_size=262144, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                           sliding_window=64, layer_types=["sliding_attention", "full_attention"],
                           bos_token_id=2, eos_token_id=1, pad_token_id=0)
    out = tmp_path_factory.mktemp("tiny_gemma")
    Gemma3ForCausalLM(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(gemma_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_cross_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random Llama with its own 1,024-token byte-level BPE (trained on the built-in corpus in
    well under a second): a cross-tokenizer teacher that loads in moments, unlike Gemma's 262k-token tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from distillm_edge.data import builtin_corpus_path

    rows = [json.loads(line) for line in builtin_corpus_path().read_text(encoding="utf-8").splitlines() if line.strip()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([r["question"] + "\n" + r["answer"] for r in rows],
                            trainers.BpeTrainer(vocab_size=1024, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(2)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=512, bos_token_id=fast.bos_token_id,
                      eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    out = tmp_path_factory.mktemp("tiny_cross")
    LlamaForCausalLM(cfg).save_pretrained(out)
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_wide_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A 2-layer, 96-wide random Llama with SmolLM2's tokenizer: a same-tokenizer teacher of another width."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    cfg = LlamaConfig(
        vocab_size=len(smollm2_tokenizer), hidden_size=96, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=smollm2_tokenizer.bos_token_id, eos_token_id=smollm2_tokenizer.eos_token_id,
    )
    out = tmp_path_factory.mktemp("tiny_wide")
    LlamaForCausalLM(cfg).save_pretrained(out)
    smollm2_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps one AcceleratorState per process; a run with another mixed precision needs it cleared."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()
