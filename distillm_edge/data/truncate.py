"""Token-limit truncation with the student's tokenizer: keep the question, cut the context first,
then the answer.

Per record, with ``q``, ``c``, ``a`` the token counts of instruction, input and response
(tokenized separately, without special tokens; the chat template's few tokens are not counted):
- ``q + c + a <= max_tokens``: unchanged;
- else if ``q + a <= max_tokens``: the context keeps its first ``max_tokens - q - a`` tokens;
- else: the context is dropped and the response keeps its first ``max_tokens - q`` tokens, cut
  back to the last sentence end when that keeps at least half of them; if fewer than
  ``MIN_RESPONSE_TOKENS`` would remain (the question alone nearly fills the budget), the record
  is dropped and logged as ``too_long``.
Cuts happen at token boundaries via the tokenizer's character offsets, so no text is re-decoded.

``tokenizer`` is any Hugging Face *fast* tokenizer (it must return ``offset_mapping``); tests use
a tiny word-level one. Fast path: a record is tokenized only when an upper bound on its token
count (UTF-8 bytes + spaces + 1 per field: a byte-level BPE or SentencePiece token covers at least
one byte, plus at most one word-boundary token per word) exceeds ``max_tokens``; short QA items
(most of them) never touch the tokenizer. Tested equal to tokenizing everything.

Test: ``pytest tests/data/test_truncate.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from distillm_edge.data.records import Record
from distillm_edge.data.report import Report

MIN_RESPONSE_TOKENS = 16
FIELDS = ("instruction", "input", "response")


@dataclasses.dataclass
class TruncationStats:
    max_tokens: int
    records: int = 0
    tokenized: int = 0
    context_truncated: int = 0
    response_truncated: int = 0
    dropped: int = 0


def token_bound(text: str) -> int:
    """An upper bound on the number of tokens of ``text`` (see the module docstring)."""
    return len(text.encode("utf-8")) + text.count(" ") + 1 if text else 0


def cut(text: str, offsets: list[tuple[int, int]], keep: int, sentence: bool = False) -> str:
    """``text`` up to the end of token ``keep`` (optionally back to the last sentence end)."""
    if keep >= len(offsets):
        return text
    if keep <= 0:
        return ""
    end = offsets[keep - 1][1]
    head = text[:end]
    if sentence:
        stop = max(head.rfind(". "), head.rfind(".\n"), head.rfind("\n"))
        if stop >= end // 2:
            head = head[: stop + 1]
    return head.rstrip()


def plan(counts: tuple[int, int, int], max_tokens: int) -> tuple[int, int] | None:
    """``(context tokens kept, response tokens kept)`` for token counts (q, c, a); None = drop."""
    q, c, a = counts
    if q + c + a <= max_tokens:
        return c, a
    if q + a <= max_tokens:
        return max_tokens - q - a, a
    if max_tokens - q < MIN_RESPONSE_TOKENS:
        return None
    return 0, max_tokens - q


def truncate(
    records: Iterable[Record], tokenizer, max_tokens: int, report: Report, stats: TruncationStats, batch: int = 256
) -> Iterator[Record]:
    """Apply the token limit to each record, in order (tokenizing ``batch`` records at a time)."""
    buffer: list[Record] = []
    for record in records:
        stats.records += 1
        if sum(token_bound(getattr(record, f)) for f in FIELDS) <= max_tokens:
            if not buffer:
                yield record
                continue
        buffer.append(record)
        if len(buffer) >= batch:
            yield from _flush(buffer, tokenizer, max_tokens, report, stats)
            buffer = []
    if buffer:
        yield from _flush(buffer, tokenizer, max_tokens, report, stats)


def _flush(buffer: list[Record], tokenizer, max_tokens: int, report: Report, stats: TruncationStats) -> Iterator[Record]:
    need = [r for r in buffer if sum(token_bound(getattr(r, f)) for f in FIELDS) > max_tokens]
    encoded: dict[int, list] = {}
    if need:
        texts = [getattr(r, f) for r in need for f in FIELDS]
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        for i, r in enumerate(need):
            encoded[id(r)] = [list(map(tuple, offsets[3 * i + j])) for j in range(3)]
        stats.tokenized += len(need)
    for record in buffer:
        spans = encoded.get(id(record))
        if spans is None:
            yield record
            continue
        counts = (len(spans[0]), len(spans[1]), len(spans[2]))
        kept = plan(counts, max_tokens)
        if kept is None:
            stats.dropped += 1
            report.remove(record, "too_long", f"question alone has {counts[0]} of the {max_tokens} tokens allowed")
            continue
        if kept[0] < counts[1]:
            record.input = cut(record.input, spans[1], kept[0])
            stats.context_truncated += 1
        if kept[1] < counts[2]:
            record.response = cut(record.response, spans[2], kept[1], sentence=True)
            stats.response_truncated += 1
        yield record
