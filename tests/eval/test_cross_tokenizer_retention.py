"""Retention across tokenizers: a student and a teacher with different tokenizers score exactly the
same reference characters (cut by words, not by each model's tokens), retention is computed on
tokenizer-free measures only (bits per byte, word/byte perplexity, ROUGE/BLEU, accuracy), and the
per-token figures (token perplexity, next-token accuracy) are shown per model, never divided.

Two tiny random models: the shared 2-layer Llama with SmolLM2's tokenizer (``tiny_llama_dir``) and
a 2-layer Llama over a 300-token byte-level BPE trained in the test, with its own chat template.

Run: ``pytest tests/eval/test_cross_tokenizer_retention.py``.
"""

from __future__ import annotations

import json
import math

import pytest

from distillm_edge.eval.config import EvalConfig
from distillm_edge.eval.generation import cut_words

REFERENCES = [
    ("What is gout?", "Gout is a form of inflammatory arthritis caused by urate crystals in a joint, often the big toe."),
    ("Define anemia.", "Anemia means too few red blood cells or too little hemoglobin to carry oxygen to the tissues."),
    ("What does métformine do?", "Métformine lowers hepatic glucose output; it rarely causes hypoglycaemia on its own."),
]


@pytest.fixture(scope="module")
def other_tokenizer_model(tmp_path_factory):
    """A tiny Llama whose tokenizer is a small byte-level BPE (not SmolLM2's), saved as a checkpoint."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|eot|>", "<|user|>", "<|assistant|>"]
    corpus = [q + " " + a for q, a in REFERENCES] * 3
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        special_tokens=specials, show_progress=False))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eot|>", pad_token="<|eot|>")
    hf.chat_template = ("{% for m in messages %}<|user|>{{ m['content'] }}<|eot|>{% endfor %}"
                        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(hf), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=512, eos_token_id=0, pad_token_id=0, bos_token_id=0)
    out = tmp_path_factory.mktemp("other_tok")
    LlamaForCausalLM(cfg).save_pretrained(out)
    hf.save_pretrained(out)
    return out


def test_retention_across_tokenizers_uses_the_same_text_and_no_per_token_ratio(tmp_path, tiny_llama_dir, other_tokenizer_model):
    import torch

    from distillm_edge.eval.run import run

    data = tmp_path / "gen.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in REFERENCES))
    before = torch.get_num_threads()
    try:
        summary = run(EvalConfig(model=str(tiny_llama_dir), teacher=str(other_tokenizer_model), tasks=("generation",),
                                 data=str(data), max_new_tokens=2, max_ref_words=9, threads=1, out=str(tmp_path / "run")))
    finally:
        torch.set_num_threads(before)
    samples = {role: [json.loads(line) for line in (tmp_path / "run" / "samples" / f"{role}.generation.jsonl").open()]
               for role in ("model", "teacher")}
    # the same characters for both models, cut by words
    expected = [cut_words(a, 9) for _, a in REFERENCES]
    assert [s["scored_reference"] for s in samples["model"]] == [s["scored_reference"] for s in samples["teacher"]] == expected
    assert [s["reference_tokens"] for s in samples["model"]] != [s["reference_tokens"] for s in samples["teacher"]]
    # bits per byte from the per-item NLLs over the UTF-8 bytes of the same text
    n_bytes = sum(len(t.encode("utf-8")) for t in expected)
    for role in ("model", "teacher"):
        gen = summary["results"][role]["generation"]
        nll = sum(s["reference_nll"] for s in samples[role])
        assert gen["scored_bytes"] == n_bytes and gen["scored_words"] == 27
        assert gen["bits_per_byte"] == pytest.approx(nll / n_bytes / math.log(2), rel=1e-4)
        assert gen["word_perplexity"] == pytest.approx(math.exp(nll / 27), rel=1e-4)
    retention = summary["retention"]
    teacher, student = (summary["results"][r]["generation"] for r in ("teacher", "model"))
    assert retention["generation bits_per_byte"] == pytest.approx(teacher["bits_per_byte"] / student["bits_per_byte"])
    assert "generation rougeL" in retention and "generation word_perplexity" in retention
    assert not [row for row in retention if "token" in row]  # token perplexity / next-token accuracy: per model only
    # the bits-per-byte difference is paired over the same bytes, with an interval
    noise = summary["noise"]["teacher"]["generation bits_per_byte"]
    assert noise["diff"] == pytest.approx(student["bits_per_byte"] - teacher["bits_per_byte"], rel=1e-4)
    assert noise["ci95"][0] <= noise["diff"] <= noise["ci95"][1]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| generation token_perplexity |" in report and "per model" in report
