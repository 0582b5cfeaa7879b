"""Tokenization, prompt masking, collation, curriculum order and cross-tokenizer alignment of batches.

Uses the real SmolLM2 and Gemma-3 tokenizers (fast to load once materialized in the cache).

Run: ``pytest tests/training/test_batches.py``.
"""

from __future__ import annotations

import pytest

from distillm_edge.training.batches import (
    FALLBACK_TEMPLATE,
    align,
    collate,
    encode,
    encode_records,
    ensure_chat_template,
    epoch_order,
    micro_batches,
)

RECORD = {"id": "r1", "instruction": "What does the P wave represent?", "input": "",
          "response": "The P wave represents atrial depolarization.", "specialty": "cardiology", "difficulty": 1}


def records(n: int) -> list[dict]:
    return [dict(RECORD, id=f"r{i}", difficulty=1 + (i * 7) % 4,
                 response=f"Answer number {i}: the P wave represents atrial depolarization.") for i in range(n)]


@pytest.fixture(scope="module")
def gemma_tokenizer(gemma_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gemma_dir)


def test_prompt_masking_counts_only_the_response_and_end_of_turn(smollm2_tokenizer):
    tok = smollm2_tokenizer
    enc = encode(tok, RECORD, 256)
    counted = [i for i, c in zip(enc.ids, enc.counted, strict=True) if c]
    assert tok.decode(counted) == RECORD["response"] + "<|im_end|>\n"
    assert not any(enc.counted[: enc.first]) and all(enc.counted[enc.first :])
    everything = encode(tok, RECORD, 256, train_on_prompt=True)
    assert all(everything.counted) and everything.ids == enc.ids


def test_collate_targets_are_the_next_counted_tokens(smollm2_tokenizer):
    tok = smollm2_tokenizer
    examples, dropped = encode_records(records(3), tok, {}, 256)
    assert dropped == 0
    batch = collate(examples, tok.pad_token_id, {})
    assert batch.input_ids.shape[0] == 3
    for b, ex in enumerate(examples):
        rows = batch.row_sample == b
        assert tok.decode(batch.targets[rows]) == tok.decode([i for i, c in zip(ex.student.ids, ex.student.counted, strict=True) if c])
        # padding never counts
        assert not batch.loss_mask[b, len(ex.student.ids) - 1 :].any()
    assert batch.tokens == sum(sum(e.student.counted) for e in examples)


def test_truncation_and_records_without_response_tokens(smollm2_tokenizer):
    tok = smollm2_tokenizer
    full = encode(tok, RECORD, 256)
    short = encode(tok, RECORD, full.first + 3)
    assert len(short.ids) == full.first + 3 and sum(short.counted) == 3
    assert encode(tok, RECORD, full.first) is None  # only prompt left: nothing to learn
    _, dropped = encode_records([RECORD], tok, {}, full.first)
    assert dropped == 1


def test_curriculum_orders_each_epoch_by_stage_and_shuffles_within(smollm2_tokenizer):
    examples, _ = encode_records(records(16), smollm2_tokenizer, {}, 128)
    for epoch in range(2):
        order = epoch_order(examples, seed=0, epoch=epoch, curriculum=True)
        stages = [examples[i].difficulty for i in order]
        assert stages == sorted(stages) and sorted(order) == list(range(16))
    plain0 = epoch_order(examples, seed=0, epoch=0, curriculum=False)
    assert plain0 == epoch_order(examples, seed=0, epoch=0, curriculum=False)
    assert plain0 != epoch_order(examples, seed=0, epoch=1, curriculum=False)
    batches = micro_batches(examples, 3, seed=0, curriculum=False, epochs=2)
    assert len(batches) == 2 * 6 and all(len(b) <= 3 for b in batches)


def test_cross_tokenizer_alignment_pairs_predict_the_same_text(smollm2_tokenizer, gemma_tokenizer):
    student_tok, teacher_tok = smollm2_tokenizer, gemma_tokenizer
    s = encode(student_tok, RECORD, 256)
    t = encode(teacher_tok, RECORD, 1024, max_response_chars=s.response_chars)
    s_pos, t_pos = align(s, t)
    assert len(s_pos) >= 0.6 * (len(s.ids) - s.first)  # most response positions align
    for sp, tp in zip(s_pos, t_pos, strict=True):
        # both positions have read the same response prefix (what they then predict starts at the same character)
        seen_s = student_tok.decode(s.ids[s.first : sp + 1])
        seen_t = teacher_tok.decode(t.ids[t.first : tp + 1])
        assert seen_s.strip() == seen_t.strip()
    assert s_pos[0] == s.first - 1 and t_pos[0] == t.first - 1  # the response's first token is predicted by both


def test_collate_builds_flat_row_views_for_a_cross_tokenizer_teacher(smollm2_tokenizer, gemma_tokenizer):
    examples, _ = encode_records(records(2), smollm2_tokenizer, {1: gemma_tokenizer}, 256)
    batch = collate(examples, smollm2_tokenizer.pad_token_id, {1: gemma_tokenizer.pad_token_id})
    view = batch.views[1]
    assert view.student_rows.numel() == view.teacher_rows.numel() == int(view.keep.sum())
    assert int(view.student_rows.max()) < batch.tokens
    assert view.targets.numel() == int(sum(sum(e.teachers[1].counted) for e in examples))
    assert gemma_tokenizer.decode(view.targets).count("<end_of_turn>") == 2


def test_fallback_chat_template_for_tokenizers_without_one(smollm2_tokenizer):
    import copy

    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = None
    ensure_chat_template(tok)
    assert tok.chat_template == FALLBACK_TEMPLATE
    enc = encode(tok, RECORD, 256)
    counted = tok.decode([i for i, c in zip(enc.ids, enc.counted, strict=True) if c])
    assert counted.startswith(RECORD["response"]) and "### Instruction" not in counted
