"""The GGUF writer follows llama.cpp's own converter (``convert_hf_to_gguf.py``) where it has a
choice: ``attention.key_length``/``value_length`` are written whenever the config names a
``head_dim`` (as the converter's ``set_gguf_parameters`` does), and the pre-tokenizer name is the
converter's (its probe-hash answer) whenever llama.cpp tokenizes identically under it.

Run: ``pytest tests/export/test_gguf_converter_conventions.py``.
"""

from __future__ import annotations

import json


def _fields(path):
    from gguf import GGUFReader

    return {k: f.contents() for k, f in GGUFReader(path).fields.items()}


def test_key_and_value_length_written_when_config_has_head_dim(tiny_gguf, tiny_llama_dir):
    assert json.loads((tiny_llama_dir / "config.json").read_text())["head_dim"] == 16
    fields = _fields(tiny_gguf("f32"))
    assert fields["llama.attention.key_length"] == 16
    assert fields["llama.attention.value_length"] == 16


def test_no_key_length_when_config_has_no_head_dim(tmp_path, tiny_llama_dir, smollm2_tokenizer):
    import shutil

    from distillm_edge.export.checkpoint import open_checkpoint
    from distillm_edge.export.gguf_convert import write_gguf

    src = tmp_path / "nohd"
    shutil.copytree(tiny_llama_dir, src)
    cfg = json.loads((src / "config.json").read_text())
    del cfg["head_dim"]
    (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "nohd.gguf"
    write_gguf(open_checkpoint(src), smollm2_tokenizer, out, "f32", "nohd")
    fields = _fields(out)
    assert "llama.attention.key_length" not in fields and "llama.attention.value_length" not in fields


def _byte_tokenizer(directory):
    """A byte-level BPE tokenizer with only single-byte tokens and merges inside words: every
    llama.cpp pre-tokenizer kind splits text into the same ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["he"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("h", "e")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    fast.save_pretrained(directory)
    return fast


def test_pre_tokenizer_is_the_converters_choice_when_tokenization_is_identical(tmp_path, monkeypatch):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from distillm_edge.export import gguf_vocab
    from distillm_edge.export.checkpoint import open_checkpoint
    from distillm_edge.export.gguf_convert import vocab_for

    src = tmp_path / "bytes"
    tokenizer = _byte_tokenizer(src)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=128)).save_pretrained(src)
    assert gguf_vocab._plain_gpt2_split(tokenizer)
    # llama.cpp's converter names this tokenizer "llama-bpe" (its probe hash, planted here)
    monkeypatch.setitem(gguf_vocab.KNOWN_PRE_TOKENIZERS, gguf_vocab.probe_hash(tokenizer), "llama-bpe")
    assert gguf_vocab.guess_pre_tokenizer(tokenizer) == "llama-bpe"
    vocab = vocab_for(open_checkpoint(src), tokenizer, tmp_path)
    assert vocab.pre == "llama-bpe"  # "gpt-2" tokenizes identically too, but is not what the converter writes
