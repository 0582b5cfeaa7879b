"""Cleaning: NFKC + whitespace normalization of every field, then removal of empty or trivially
short items (each removal is logged with its reason).

"Trivially short" is deliberately mild, because short answers are legitimate in this data
(COVID-QA spans such as "Spo0A", MCQ answers such as "C. Ceftriaxone"):
- instruction: fewer than 2 words or fewer than 8 characters (after cleaning);
- response: fewer than 2 letters/digits ("", "-", "?", "A").

Test: ``pytest tests/data/test_clean.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from distillm_edge.data.records import Record, clean_text
from distillm_edge.data.report import Report

MIN_INSTRUCTION_CHARS = 8
MIN_INSTRUCTION_WORDS = 2
MIN_RESPONSE_ALNUM = 2


def clean_record(record: Record) -> Record:
    """Normalize the text fields in place (and return the record)."""
    record.instruction = clean_text(record.instruction)
    record.input = clean_text(record.input) if record.input else ""
    record.response = clean_text(record.response)
    if record.question:
        record.question = clean_text(record.question)
    return record


def too_short(record: Record) -> str:
    """Why a cleaned record is empty or trivially short, or "" when it is fine."""
    if not record.instruction:
        return "empty instruction"
    if not record.response:
        return "empty response"
    if len(record.instruction) < MIN_INSTRUCTION_CHARS or len(record.instruction.split()) < MIN_INSTRUCTION_WORDS:
        return f"instruction too short ({record.instruction!r})"
    alnum = 0
    for ch in record.response:
        if ch.isalnum():
            alnum += 1
            if alnum >= MIN_RESPONSE_ALNUM:
                return ""
    return f"response too short ({record.response!r})"


def clean(records: Iterable[Record], report: Report) -> Iterator[Record]:
    """Normalize each record; drop (and log) empty or trivially short ones."""
    for record in records:
        if "short" in record.memo:  # already cleaned and checked by a worker
            reason = record.memo.pop("short")
        else:
            clean_record(record)
            reason = too_short(record)
        if reason:
            report.remove(record, "empty_or_short", reason)
        else:
            yield record
