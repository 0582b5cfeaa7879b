"""Packing: per-example logits and losses of a packed row equal unpacked runs (attention never crosses a
boundary), for the student's tokens and a cross-tokenizer teacher's packed view; the packing plan.

Run: ``pytest tests/training/test_packing.py``.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F

from distillm_edge.errors import UserError
from distillm_edge.training.batches import collate, encode_records, ensure_chat_template
from distillm_edge.training.packing import collate_packed, pack_order, padding_share


@pytest.fixture(scope="module")
def records() -> list[dict]:
    from distillm_edge.data import builtin_corpus_path

    rows = [json.loads(x) for x in builtin_corpus_path().read_text(encoding="utf-8").splitlines() if x.strip()]
    random.Random(0).shuffle(rows)
    return [{"id": r["id"], "instruction": r["question"], "input": "", "response": r["answer"], "specialty": r["specialty"],
             "difficulty": r["difficulty"]} for r in rows[:5]]


@pytest.fixture(scope="module")
def tiny_llama(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="sdpa").eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    ensure_chat_template(tok)
    return model, tok


def rows(logits: torch.Tensor) -> torch.Tensor:
    """Logits computed with ``logits_to_keep=<mask>`` as flat rows [N, V] (as the trainer reads them)."""
    return logits.reshape(-1, logits.shape[-1])


def row_losses(logits: torch.Tensor, targets: torch.Tensor, row_sample: torch.Tensor, n: int) -> list[float]:
    """Mean cross-entropy of each example's counted tokens (fp64 accumulation)."""
    ce = F.cross_entropy(logits.double(), targets, reduction="none")
    return [float(ce[row_sample == j].mean()) for j in range(n)]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_row_gives_each_example_its_unpacked_logits(tiny_llama, records, attn):
    model, tok = tiny_llama
    model.set_attn_implementation(attn)
    examples, _ = encode_records(records, tok, {}, 96)
    pb = collate_packed(examples, tok.pad_token_id, {})
    assert pb.batch.input_ids.shape == (1, sum(pb.lengths))
    with torch.no_grad():
        packed = rows(model(**pb.model_inputs(), logits_to_keep=pb.batch.loss_mask).logits)
        naive = [model(input_ids=torch.tensor([e.student.ids])).logits[0] for e in examples]  # one at a time
        crossing = model(input_ids=pb.batch.input_ids, use_cache=False).logits[0][pb.batch.loss_mask[0]]
    reference = torch.cat([lg[collate([e], tok.pad_token_id, {}).loss_mask[0]] for lg, e in zip(naive, examples)])
    assert packed.shape == reference.shape
    torch.testing.assert_close(packed, reference, atol=2e-5, rtol=1e-4)
    want = row_losses(reference, pb.batch.targets, pb.batch.row_sample, len(examples))
    got = row_losses(packed, pb.batch.targets, pb.batch.row_sample, len(examples))
    assert got == pytest.approx(want, rel=1e-6, abs=1e-6)
    # the same row with plain causal attention (crossing boundaries) differs from the first example on:
    # the test can tell packed attention from leaking attention
    first = pb.batch.row_sample == 0
    torch.testing.assert_close(crossing[first], reference[first], atol=2e-5, rtol=1e-4)
    assert not torch.allclose(crossing[~first], reference[~first], atol=1e-3)
    model.set_attn_implementation("sdpa")


def test_packed_equals_the_padded_batch_per_example(tiny_llama, records):
    model, tok = tiny_llama
    examples, _ = encode_records(records, tok, {}, 256)  # no truncation: the examples keep different lengths
    padded = collate(examples, tok.pad_token_id, {})
    pb = collate_packed(examples, tok.pad_token_id, {})
    assert torch.equal(padded.targets, pb.batch.targets) and torch.equal(padded.row_sample, pb.batch.row_sample)
    with torch.no_grad():
        a = model(input_ids=padded.input_ids, attention_mask=padded.attention_mask, logits_to_keep=padded.loss_mask).logits
        b = rows(model(**pb.model_inputs(), logits_to_keep=pb.batch.loss_mask).logits)
    torch.testing.assert_close(rows(a), b, atol=2e-5, rtol=1e-4)
    assert padded.input_ids.numel() > pb.batch.input_ids.numel()  # the padded batch computed pad positions


def test_cross_tokenizer_view_is_packed_consistently(tiny_llama, records, tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    _, student_tok = tiny_llama
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([r["instruction"] + "\n" + r["response"] for r in records] * 3,
                            trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    ensure_chat_template(tok)
    torch.manual_seed(3)
    teacher = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)).eval()
    examples, _ = encode_records(records, student_tok, {0: tok}, 96)
    pb = collate_packed(examples, student_tok.pad_token_id, {0: tok.pad_token_id})
    view = pb.batch.views[0]
    padded = collate(examples, student_tok.pad_token_id, {0: tok.pad_token_id})
    pview = padded.views[0]
    assert view.student_rows.numel() == pview.student_rows.numel() > 0
    with torch.no_grad():
        packed = rows(teacher(**pb.teacher_inputs(0), logits_to_keep=view.keep).logits)
        ref = rows(teacher(input_ids=pview.input_ids, attention_mask=pview.attention_mask, logits_to_keep=pview.keep).logits)
    # aligned pair k: the same (student target, teacher distribution) in both layouts
    torch.testing.assert_close(packed[view.teacher_rows], ref[pview.teacher_rows], atol=2e-5, rtol=1e-4)
    assert torch.equal(pb.batch.targets[view.student_rows], padded.targets[pview.student_rows])
    # positions index the packed sequences: student_pos t predicts the same target as its flat row
    s_flat = torch.full(pb.batch.loss_mask.shape, -1, dtype=torch.long)
    s_flat[pb.batch.loss_mask] = torch.arange(int(pb.batch.loss_mask.sum()))
    assert torch.equal(s_flat[0, view.student_pos[0]], view.student_rows)
    assert torch.equal(pb.batch.views[0].targets, torch.cat([collate([e], 0, {0: 0}).views[0].targets for e in examples]))


def test_pack_order_keeps_order_budget_and_boundaries():
    lengths = [30, 50, 20, 90, 10, 10, 200, 40]
    order = [3, 0, 1, 2, 4, 5, 6, 7]
    packs = pack_order(order, lengths, 100)
    assert [i for p in packs for i in p] == order
    assert packs == [[3], [0, 1, 2], [4, 5], [6], [7]]
    assert all(sum(lengths[i] for i in p) <= 100 for p in packs if len(p) > 1)
    staged = pack_order(order, lengths, 1000, boundaries=[1, 1, 2, 2, 2, 3, 3, 3])
    assert staged == [[3, 0], [1, 2, 4], [5, 6, 7]]
    assert padding_share([[0, 1]], lengths) == pytest.approx(1 - 80 / 100)
    assert padding_share([[0], [1]], lengths) == 0.0
    with pytest.raises(UserError, match="max_tokens_per_batch"):
        pack_order(order, lengths, 0)


@pytest.mark.slow
def test_packing_real_gemma3_sliding_window_model(gemma_dir, records):
    """Gemma-3's mixed sliding-window / full attention layers honour the packed position ids too."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(gemma_dir).eval()
    tok = AutoTokenizer.from_pretrained(gemma_dir)
    ensure_chat_template(tok)
    examples, _ = encode_records(records[:3], tok, {}, 128)
    pb = collate_packed(examples, tok.pad_token_id, {})
    with torch.no_grad():
        packed = rows(model(**pb.model_inputs(), logits_to_keep=pb.batch.loss_mask).logits)
        ref = torch.cat([rows(model(input_ids=torch.tensor([e.student.ids]), use_cache=False,
                                    logits_to_keep=collate([e], tok.pad_token_id, {}).loss_mask).logits) for e in examples])
    torch.testing.assert_close(packed, ref, atol=1e-3, rtol=1e-3)
