"""Turn prepared records into token batches: chat formatting, prompt masking, curriculum order.

A record (``instruction``, ``input``, ``response``, ``specialty``, ``difficulty``) becomes one
conversation in the tokenizer's own chat template: the user turn is the instruction (plus the
input, if any) and the assistant turn is the response. :func:`encode` tokenizes the whole
conversation once with character offsets, so

- *prompt masking* is exact: a token counts for the loss when it starts at or after the first
  character of the response (the response and the template's end-of-turn marker); with
  ``train_on_prompt`` every token counts;
- a teacher with another tokenizer encodes the same record with *its* template, and the offsets
  of both encodings, measured from the start of the response, are what cross-tokenizer alignment
  matches (see ``cross_tokenizer.py``).

A tokenizer without a chat template (e.g. a base Llama) gets :data:`FALLBACK_TEMPLATE`; the
trainer saves it with the student so ``chat``/``eval`` format prompts the way training did.

Order: :func:`epoch_order` shuffles with a seed per epoch; with ``curriculum`` the shuffled
records are stably sorted by difficulty stage (1 basic anatomy → 4 treatment planning), so each
epoch walks the stages in order. Batches are cut from that order, which makes the data position
of a run one integer (the global micro-batch index) — enough to resume exactly.

Test: ``pytest tests/training/test_batches.py``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

FALLBACK_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] + eos_token + '\n' }}"
    "{% else %}{{ message['content'] + '\n\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)
"""Alpaca-style turns for tokenizers that ship no chat template."""


@dataclass(frozen=True)
class Encoded:
    """One record in one tokenizer: ids, which tokens count, character offsets in the chat text."""

    ids: tuple[int, ...]
    counted: tuple[bool, ...]  # token i is a training target (response, or everything with train_on_prompt)
    offsets: tuple[tuple[int, int], ...]  # (start, end) characters of token i in the chat text
    special: tuple[bool, ...]  # token i is a special/control token (consumes no text for alignment)
    response_start: int  # character where the response starts in the chat text
    first: int  # index of the first response token (>= 1: the template always opens the prompt)
    response_chars: int  # characters of the response covered by the encoding
    truncated: bool  # max_length (or max_response_chars) cut the conversation short


@dataclass(frozen=True)
class Example:
    """A record encoded for the student and, by index, for each teacher with another tokenizer."""

    id: str
    specialty: str
    difficulty: int
    student: Encoded
    teachers: Mapping[int, Encoded]  # teacher index -> encoding (only teachers with another tokenizer)


@dataclass
class TeacherView:
    """A cross-tokenizer teacher's side of a batch.

    ``keep`` marks the teacher positions whose logits are needed (aligned ones; in evaluation
    also those predicting the teacher's own counted tokens). Logits computed with
    ``logits_to_keep=keep`` come out as flat rows in row-major order; ``student_rows[k]`` and
    ``teacher_rows[k]`` index the flat student and teacher rows of aligned pair k.
    ``student_pos``/``teacher_pos`` [B, K] (-1 padded) are the same pairs as sequence positions
    (for hidden-state alignment). ``targets``/``target_rows``: the teacher's own next tokens at
    its counted positions, as flat rows of ``eval_keep``.
    """

    input_ids: torch.Tensor  # [B, Tt]
    attention_mask: torch.Tensor  # [B, Tt]
    keep: torch.Tensor  # [B, Tt] bool: aligned positions
    student_rows: torch.Tensor  # [K]
    teacher_rows: torch.Tensor  # [K] flat rows of ``keep``
    student_pos: torch.Tensor  # [B, K'] -1 padded
    teacher_pos: torch.Tensor  # [B, K'] -1 padded
    eval_keep: torch.Tensor  # [B, Tt] bool: aligned or predicting a counted teacher token
    eval_teacher_rows: torch.Tensor  # [K] flat rows of ``eval_keep`` for the aligned pairs
    target_rows: torch.Tensor  # [M] flat rows of ``eval_keep`` predicting a counted teacher token
    targets: torch.Tensor  # [M] those tokens
    position_ids: torch.Tensor | None = None  # [1, Tt] packed rows (training/packing.py): restart per example


@dataclass
class Batch:
    """Right-padded student tensors plus flat-row views of the counted positions.

    ``loss_mask[b, t]``: position t predicts a counted token (t + 1). Student logits computed
    with ``logits_to_keep=loss_mask`` come out as N flat rows; ``targets[n]`` is row n's next
    token and ``row_sample[n]`` its sample in the batch.
    """

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    loss_mask: torch.Tensor  # [B, T] bool
    targets: torch.Tensor  # [N]
    row_sample: torch.Tensor  # [N]
    specialties: tuple[str, ...]
    difficulties: tuple[int, ...]
    views: dict[int, TeacherView]
    cached: dict = field(default_factory=dict)  # teacher index -> teachers.cache.CachedRows (cached teachers; step.py)
    position_ids: torch.Tensor | None = None  # [1, T] a packed row (training/packing.py): restart at 0 per example,
    # and the models get attention_mask=None so transformers builds the block-diagonal causal mask

    @property
    def tokens(self) -> int:
        """Counted (target) tokens in this batch."""
        return int(self.targets.numel())


def model_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None,
                 device) -> dict:
    """Keyword arguments for a Hugging Face causal LM: right-padded rows with their attention mask, or a packed
    row with position ids restarting per example and no mask (transformers then builds the block-diagonal
    causal mask; a KV cache would switch that detection off, hence ``use_cache=False``)."""
    if position_ids is None:
        return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    return {"input_ids": input_ids.to(device), "position_ids": position_ids.to(device), "attention_mask": None,
            "use_cache": False}


def ensure_chat_template(tokenizer) -> None:
    """Give a tokenizer without a chat template :data:`FALLBACK_TEMPLATE` (in place)."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_TEMPLATE


def user_text(record: Mapping) -> str:
    extra = (record.get("input") or "").strip()
    return record["instruction"].strip() + (f"\n\n{extra}" if extra else "")


def encode(tokenizer, record: Mapping, max_length: int, *, train_on_prompt: bool = False,
           max_response_chars: int | None = None) -> Encoded | None:
    """Encode one record as a chat; None when truncation leaves no counted token.

    ``max_response_chars`` drops tokens that end after that many response characters (keeps a
    cross-tokenizer teacher's view within the text the student saw).
    """
    messages = [{"role": "user", "content": user_text(record)}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    response = record["response"].strip()
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    start = full.find(response, len(prompt)) if full.startswith(prompt) else full.find(response)
    if start < 0:
        raise ValueError(f"record {record.get('id')}: the chat template changed the response text; cannot mask the prompt")
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    n_full = len(enc["input_ids"])
    ids = list(enc["input_ids"])[:max_length]
    offsets = [tuple(o) for o in enc["offset_mapping"][: len(ids)]]
    if max_response_chars is not None:
        while ids and offsets[-1][1] - start > max_response_chars:
            ids.pop(), offsets.pop()
    first = next((i for i, (a, _) in enumerate(offsets) if a >= start), len(ids))
    counted = [train_on_prompt or i >= first for i in range(len(ids))]
    if not any(counted[1:]) or first == 0:  # token 0 is never a target: nothing predicts it
        return None
    specials = set(getattr(tokenizer, "all_special_ids", []) or []) | _added_special_ids(tokenizer)
    covered = max(0, min(len(response), max(b for _, b in offsets) - start))
    return Encoded(tuple(ids), tuple(counted), tuple(offsets), tuple(i in specials for i in ids), start, first, covered,
                   len(ids) < n_full)


def _added_special_ids(tokenizer) -> set[int]:
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return {i for i, tok in decoder.items() if getattr(tok, "special", False)}


def align(student: Encoded, teacher: Encoded) -> tuple[list[int], list[int]]:
    """Positions of ``student`` and ``teacher`` whose logits predict the same response text.

    Only the response part is aligned (the two chat templates differ): the last prompt token
    stands in as a zero-width token, so the prediction of the response's first token aligns too.
    """
    from distillm_edge.training.cross_tokenizer import align_positions

    def part(e: Encoded) -> tuple[int, list, list]:
        k = e.first - 1
        offs = [(0, 0)] + [(a - e.response_start, b - e.response_start) for a, b in e.offsets[k + 1 :]]
        return k, offs, [True] + list(e.special[k + 1 :])

    ks, s_offs, s_spec = part(student)
    kt, t_offs, t_spec = part(teacher)
    s_pos, t_pos = align_positions(s_offs, t_offs, s_spec, t_spec)
    return [p + ks for p in s_pos], [p + kt for p in t_pos]


def encode_records(records: Sequence[Mapping], student_tokenizer, teacher_tokenizers: Mapping[int, object],
                   max_length: int, *, train_on_prompt: bool = False) -> tuple[list[Example], int]:
    """Encode records for the student and each other-tokenizer teacher; returns (examples, dropped)."""
    out, dropped = [], 0
    for rec in records:
        s = encode(student_tokenizer, rec, max_length, train_on_prompt=train_on_prompt)
        if s is None:
            dropped += 1
            continue
        views = {}
        for k, tok in teacher_tokenizers.items():
            limit = s.response_chars if s.truncated else None  # the teacher sees no more of the response than the student
            v = encode(tok, rec, 4 * max_length, train_on_prompt=train_on_prompt, max_response_chars=limit)
            if v is None:
                break
            views[k] = v
        if len(views) != len(teacher_tokenizers):
            dropped += 1
            continue
        out.append(Example(str(rec.get("id", len(out))), str(rec.get("specialty") or "general"),
                           int(rec.get("difficulty") or 1), s, views))
    return out, dropped


def epoch_order(examples: Sequence[Example], *, seed: int, epoch: int, curriculum: bool) -> list[int]:
    """Indices of one epoch: shuffled by (seed, epoch); with curriculum, stably sorted by stage."""
    order = list(range(len(examples)))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    if curriculum:
        order.sort(key=lambda i: examples[i].difficulty)
    return order


def micro_batches(examples: Sequence[Example], batch_size: int, *, seed: int, curriculum: bool,
                  epochs: int) -> list[list[int]]:
    """All micro-batches of ``epochs`` epochs, in training order (a batch never spans two epochs)."""
    out: list[list[int]] = []
    for epoch in range(epochs):
        order = epoch_order(examples, seed=seed, epoch=epoch, curriculum=curriculum)
        out.extend(order[i : i + batch_size] for i in range(0, len(order), batch_size))
    return out


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _flat_index(mask: torch.Tensor) -> torch.Tensor:
    """[B, T] long: the flat row (row-major order among True entries) of each True position, else -1."""
    index = torch.full(mask.shape, -1, dtype=torch.long)
    index[mask] = torch.arange(int(mask.sum()))
    return index


def _shifted_mask(rows: Sequence[Sequence[bool]]) -> torch.Tensor:
    """[B, T] bool: position t is followed by a counted token t + 1."""
    counted = _pad([[int(c) for c in r] for r in rows], 0).bool()
    out = torch.zeros_like(counted)
    out[:, :-1] = counted[:, 1:]
    return out


def collate(examples: Sequence[Example], pad_id: int, teacher_pad_ids: Mapping[int, int]) -> Batch:
    """Stack examples into a :class:`Batch` (right padding), with a view per other-tokenizer teacher."""
    ids = _pad([e.student.ids for e in examples], pad_id)
    attn = _pad([[1] * len(e.student.ids) for e in examples], 0)
    loss_mask = _shifted_mask([e.student.counted for e in examples])
    b, t = loss_mask.nonzero(as_tuple=True)
    student_flat = _flat_index(loss_mask)
    views: dict[int, TeacherView] = {}
    for k, tpad in teacher_pad_ids.items():
        encs = [e.teachers[k] for e in examples]
        t_ids = _pad([x.ids for x in encs], tpad)
        t_targets = _shifted_mask([x.counted for x in encs])
        pairs = []
        for row, (e, x) in enumerate(zip(examples, encs, strict=True)):
            s_pos, t_pos = align(e.student, x)
            pairs.append([(s, tp) for s, tp in zip(s_pos, t_pos, strict=True) if loss_mask[row, s]])
        keep = torch.zeros_like(t_targets)
        width = max((len(p) for p in pairs), default=0)
        s_grid = torch.full((len(pairs), width), -1, dtype=torch.long)
        t_grid = torch.full((len(pairs), width), -1, dtype=torch.long)
        for row, p in enumerate(pairs):
            for j, (s, tp) in enumerate(p):
                keep[row, tp] = True
                s_grid[row, j], t_grid[row, j] = s, tp
        eval_keep = keep | t_targets
        pb, pj = (s_grid >= 0).nonzero(as_tuple=True)
        s_at, t_at = s_grid[pb, pj], t_grid[pb, pj]
        tb, tt = t_targets.nonzero(as_tuple=True)
        views[k] = TeacherView(
            input_ids=t_ids, attention_mask=_pad([[1] * len(x.ids) for x in encs], 0), keep=keep,
            student_rows=student_flat[pb, s_at], teacher_rows=_flat_index(keep)[pb, t_at],
            student_pos=s_grid, teacher_pos=t_grid, eval_keep=eval_keep,
            eval_teacher_rows=_flat_index(eval_keep)[pb, t_at], target_rows=_flat_index(eval_keep)[tb, tt],
            targets=t_ids[tb, tt + 1],
        )
    return Batch(ids, attn, loss_mask, ids[b, t + 1], b, tuple(e.specialty for e in examples),
                 tuple(e.difficulty for e in examples), views)
