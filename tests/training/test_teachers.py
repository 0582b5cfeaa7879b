"""Which teachers share the student's tokenizer: decided on the regular vocabulary plus the special tokens
actually used, so Llama-3.0 (Med42-8B) and Llama-3.2 tokenizers, which differ only in the names of reserved
special tokens, count as the same (and the differences are reported).

The tokenizers are tiny and built offline (a word-level vocabulary plus Llama-3-style special tokens).
Run: ``pytest tests/training/test_teachers.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from distillm_edge.config import from_mapping
from distillm_edge.training import teachers as teachers_mod
from distillm_edge.training.config import TrainConfig
from distillm_edge.training.teachers import open_teachers

WORDS = ["the", "heart", "pumps", "blood", "what", "does", "do", "?", "it", "."]
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
            "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant"
            "<|end_header_id|>{% endif %}")
LLAMA_32 = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
            "<|finetune_right_pad_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
            "<|python_tag|>"]
LLAMA_30 = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
            "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_3|>",
            "<|eot_id|>", "<|reserved_special_token_4|>"]


def make_tokenizer(out: Path, specials: list[str], words: list[str] = WORDS) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words + ["user", "assistant", "system", "[UNK]"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   unk_token="[UNK]")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(out)
    LlamaConfig(vocab_size=len(fast), hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=1,
                num_key_value_heads=1).save_pretrained(out)  # a model directory needs a config, no weights
    return out


@pytest.fixture
def student_dir(tmp_path) -> Path:
    return make_tokenizer(tmp_path / "llama32", LLAMA_32)


def load(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_reserved_special_token_names_do_not_make_another_tokenizer(student_dir, tmp_path):
    teacher_dir = make_tokenizer(tmp_path / "llama30", LLAMA_30)
    student = load(student_dir)
    cfg = from_mapping(TrainConfig, {"teachers": [{"model": str(teacher_dir)}], "student": {"model": str(student_dir)}})
    (teacher,) = open_teachers(cfg, student, cache_dir=None)
    assert teacher.same_tokenizer, "Llama-3.0 vs 3.2 differ only in unused reserved special tokens"
    diff = teachers_mod.compare_tokenizers(student, load(teacher_dir))
    assert diff.same and len(diff.differences) == 3
    assert any("<|finetune_right_pad_id|>" in d and "<|reserved_special_token_2|>" in d for d in diff.differences)
    assert "3 special tokens differ" in teacher.tokenizer_note and "unused" in teacher.tokenizer_note


def test_a_used_special_token_or_a_regular_token_that_differs_makes_another_tokenizer(student_dir, tmp_path):
    student = load(student_dir)
    renamed_eot = make_tokenizer(tmp_path / "eot", [s if s != "<|eot_id|>" else "<|end_of_turn|>" for s in LLAMA_32])
    diff = teachers_mod.compare_tokenizers(student, load(renamed_eot))
    assert not diff.same and any("<|eot_id|>" in d for d in diff.differences)
    other_words = make_tokenizer(tmp_path / "words", LLAMA_32, words=WORDS[:-2] + ["lungs", "."])
    diff = teachers_mod.compare_tokenizers(student, load(other_words))
    assert not diff.same and any("regular" in d for d in diff.differences)
    assert teachers_mod.compare_tokenizers(student, load(student_dir)).same
