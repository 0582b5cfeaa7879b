"""Readers for the named medical datasets in ``../shared/data`` (one function per layout).

Each reader takes ``(path, source)`` and yields a standardized :class:`Record` per item, or a
:class:`BadRecord` (file:line + reason) for an item of the wrong shape, so the pipeline counts it.

| format      | layout                                                        | becomes                                    |
|-------------|---------------------------------------------------------------|--------------------------------------------|
| medquad     | JSONL id, source, focus, qtype, question, answer (also .gz)   | question → answer                          |
| pubmedqa    | JSON {pmid: {QUESTION, CONTEXTS, LABELS, LONG_ANSWER, final_decision}} | question + labelled abstract → "Yes. <long answer>" |
| medmcqa     | JSONL question, opa..opd, cop (1-based), exp, subject_name    | question + options → "B. <option>" + explanation |
| medqa       | JSONL question, options {A..}, answer_idx, meta_info          | question + options → "C. <option>"         |
| mmlu        | CSV without header: question, A, B, C, D, answer letter       | question + options → "D. <option>"         |
| squad       | SQuAD v1 JSON data[].paragraphs[].qas[] (COVID-QA)            | question + context window → answer span    |
| instruction | JSON list of {instruction, input, output} (medalpaca, ChatDoctor) | kept as instruction / input / response |

SQuAD contexts in COVID-QA are whole papers (median ~23k characters); the reader keeps a window
of about 1,500 characters around the answer span (cut at whitespace), so the context still
holds the answer after token-limit truncation.

Test: ``pytest tests/data/test_readers.py``.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillm_edge.data.jsonfile import iter_jsonl, json_members, json_members_under, open_binary
from distillm_edge.data.records import BadRecord, Record
from distillm_edge.errors import UserError

LETTERS = "ABCDEFGHIJ"
SQUAD_BEFORE, SQUAD_AFTER = 1200, 300


class Malformed(Exception):
    """Raised inside a reader for one bad item; turned into a BadRecord by :func:`guard`."""


def text_field(obj: Any, key: str, required: bool = True) -> str:
    """``obj[key]`` as text; missing/null/non-text required fields raise :class:`Malformed`."""
    if not isinstance(obj, dict):
        raise Malformed(f"expected an object, got {type(obj).__name__}")
    if key not in obj or obj[key] is None:
        if required:
            raise Malformed(f"missing field '{key}'" if key not in obj else f"field '{key}' is null")
        return ""
    value = obj[key]
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise Malformed(f"field '{key}' should be text, got {type(value).__name__}")


def mcq_instruction(question: str, options: list[tuple[str, str]]) -> str:
    return question.strip() + "\n\nOptions:\n" + "\n".join(f"{letter}. {text.strip()}" for letter, text in options)


def mcq_response(letter: str, text: str, explanation: str = "") -> str:
    answer = f"{letter}. {text.strip()}"
    return f"{answer}\n\nExplanation: {explanation.strip()}" if explanation.strip() else answer


def guard(where: str, build, *args) -> Record | BadRecord:
    """``build(*args)``; a :class:`Malformed` becomes a BadRecord at ``where``."""
    try:
        return build(*args)
    except Malformed as exc:
        return BadRecord(where, str(exc))


def _jsonl_records(path: Path, source: str, build) -> Iterator[Record | BadRecord]:
    """``build(obj, path, lineno, source, where)`` per JSONL line, guarded."""
    for lineno, obj in iter_jsonl(path):
        if isinstance(obj, BadRecord):
            yield obj
        else:
            where = f"{path}:{lineno}"
            yield guard(where, build, obj, path, lineno, source, where)


def _medquad_record(obj: dict, path: Path, lineno: int, source: str, where: str) -> Record:
    rid = text_field(obj, "id", required=False) or f"{path.name.split('.')[0]}:{lineno}"
    return Record(
        id=f"{source}:{rid}",
        instruction=text_field(obj, "question"),
        input="",
        response=text_field(obj, "answer"),
        source=source,
        subject=text_field(obj, "source", required=False),
        where=where,
    )


def read_medquad(path: Path, source: str) -> Iterator[Record | BadRecord]:
    return _jsonl_records(path, source, _medquad_record)


def _medmcqa_record(obj: dict, path: Path, lineno: int, source: str, where: str) -> Record:
    question = text_field(obj, "question")
    options = [(LETTERS[i], text_field(obj, f"op{c}")) for i, c in enumerate("abcd")]
    cop = obj.get("cop")
    if isinstance(cop, str) and cop.strip().isdigit():
        cop = int(cop)
    if not isinstance(cop, int) or isinstance(cop, bool) or not 1 <= cop <= 4:
        raise Malformed(f"field 'cop' should be 1-4 (1 = option a), got {cop!r}")
    letter, answer = options[cop - 1]
    rid = text_field(obj, "id", required=False) or f"{path.name.split('.')[0]}:{lineno}"
    return Record(
        id=f"{source}:{rid}",
        instruction=mcq_instruction(question, options),
        input="",
        response=mcq_response(letter, answer, text_field(obj, "exp", required=False)),
        source=source,
        subject=text_field(obj, "subject_name", required=False),
        kind="mcq",
        question=question,
        choices=tuple(text for _, text in options),
        where=where,
    )


def read_medmcqa(path: Path, source: str) -> Iterator[Record | BadRecord]:
    return _jsonl_records(path, source, _medmcqa_record)


def _medqa_record(obj: dict, path: Path, lineno: int, source: str, where: str) -> Record:
    question = text_field(obj, "question")
    raw = obj.get("options")
    if not isinstance(raw, dict) or not raw:
        raise Malformed("field 'options' should be an object {A: ..., B: ...}")
    options = [(str(k), text_field(raw, k)) for k in sorted(raw)]
    letter = text_field(obj, "answer_idx").strip()
    if letter not in raw:
        raise Malformed(f"answer_idx {letter!r} is not one of the options {', '.join(sorted(raw))}")
    return Record(
        id=f"{source}:{path.name.split('.')[0]}:{lineno}",
        instruction=mcq_instruction(question, options),
        input="",
        response=mcq_response(letter, text_field(raw, letter)),
        source=source,
        subject=text_field(obj, "meta_info", required=False),
        kind="mcq",
        question=question,
        choices=tuple(text for _, text in options),
        where=where,
    )


def read_medqa(path: Path, source: str) -> Iterator[Record | BadRecord]:
    return _jsonl_records(path, source, _medqa_record)


def _pubmedqa_record(item: Any, key: str, source: str, where: str) -> Record:
    contexts = item.get("CONTEXTS") if isinstance(item, dict) else None
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise Malformed("field 'CONTEXTS' should be a list of texts")
    labels = item.get("LABELS") or []
    if isinstance(labels, list) and len(labels) == len(contexts) and all(isinstance(x, str) for x in labels):
        context = "\n".join(f"{label.capitalize()}: {text}" for label, text in zip(labels, contexts, strict=True))
    else:
        context = "\n".join(contexts)
    decision = text_field(item, "final_decision").strip().lower()
    if decision not in ("yes", "no", "maybe"):
        raise Malformed(f"final_decision should be yes/no/maybe, got {decision!r}")
    return Record(
        id=f"{source}:{key}",
        instruction=text_field(item, "QUESTION"),
        input=context,
        response=f"{decision.capitalize()}. {text_field(item, 'LONG_ANSWER').strip()}",
        source=source,
        kind="yesno",
        where=where,
    )


def read_pubmedqa(path: Path, source: str) -> Iterator[Record | BadRecord]:
    for key, item, line in json_members(path):
        where = f"{path}:{line}"
        yield guard(where, _pubmedqa_record, item, key, source, where)


def mmlu_subject(path: Path) -> str:
    stem = path.name.split(".")[0]
    for suffix in ("_dev", "_val", "_test", "_train"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _mmlu_record(row: list[str], path: Path, lineno: int, source: str, where: str) -> Record:
    if len(row) != 6:
        raise Malformed(f"expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
    letter = row[5].strip().upper()
    if letter not in ("A", "B", "C", "D"):
        raise Malformed(f"answer should be A, B, C or D, got {row[5]!r}")
    options = list(zip("ABCD", row[1:5], strict=True))
    return Record(
        id=f"{source}:{path.name.split('.')[0]}:{lineno}",
        instruction=mcq_instruction(row[0], options),
        input="",
        response=mcq_response(letter, row[1 + "ABCD".index(letter)]),
        source=source,
        subject=mmlu_subject(path),
        kind="mcq",
        question=row[0],
        choices=tuple(row[1:5]),
        where=where,
    )


def read_mmlu(path: Path, source: str) -> Iterator[Record | BadRecord]:
    for lineno, row in csv_rows(path):
        if isinstance(row, BadRecord):
            yield row
        else:
            where = f"{path}:{lineno}"
            yield guard(where, _mmlu_record, row, path, lineno, source, where)


def csv_rows(path: Path, delimiter: str = ",") -> Iterator[tuple[int, list[str] | BadRecord]]:
    """CSV rows with the line each starts on (quoted fields may span lines; blank lines skipped).

    Lines that are not UTF-8 come back as BadRecord (and read as empty); so do CSV errors.
    """
    bad: list[BadRecord] = []
    state = {"line": 0}

    def lines() -> Iterator[str]:
        try:
            with open_binary(path) as fh:
                for lineno, raw in enumerate(fh, 1):
                    state["line"] = lineno
                    try:
                        yield raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                    except UnicodeDecodeError as exc:
                        bad.append(BadRecord(f"{path}:{lineno}", f"not valid UTF-8 (byte {exc.start})"))
                        yield "\n"
        except (OSError, EOFError, zlib.error) as exc:
            raise UserError(f"{path}:{state['line'] + 1}: cannot read the file ({exc}).") from None

    reader = csv.reader(lines(), delimiter=delimiter)
    last = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield last + 1, BadRecord(f"{path}:{last + 1}", f"not valid CSV ({exc})")
            last = state["line"]
            continue
        start, last = last + 1, state["line"]
        while bad:
            item = bad.pop(0)
            yield int(item.where.rsplit(":", 1)[1]), item
        if row and any(cell.strip() for cell in row):
            yield start, row


def read_squad(path: Path, source: str) -> Iterator[Record | BadRecord]:
    for _, article, line in json_members_under(path, "data"):
        where = f"{path}:{line}"
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            yield BadRecord(where, "article should have a 'paragraphs' list")
            continue
        for p_index, paragraph in enumerate(paragraphs):
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list) or not isinstance(context, str):
                yield BadRecord(f"{where} (paragraph {p_index})", "paragraph should have 'context' text and a 'qas' list")
                continue
            for q_index, qa in enumerate(qas):
                qwhere = f"{where} (paragraph {p_index}, question {q_index})"
                yield guard(qwhere, _squad_record, qa, context, source, qwhere)


def _squad_record(qa: Any, context: str, source: str, where: str) -> Record:
    question = text_field(qa, "question")
    answers = qa.get("answers")
    if qa.get("is_impossible") or not isinstance(answers, list) or not answers:
        raise Malformed("question has no answer span (unanswerable items are not training pairs)")
    answer = text_field(answers[0], "text")
    start = answers[0].get("answer_start") if isinstance(answers[0], dict) else None
    if not isinstance(start, int) or context[start : start + len(answer)] != answer:
        start = context.find(answer)
    rid = text_field(qa, "id", required=False)
    return Record(
        id=f"{source}:{rid}" if rid else f"{source}:{where}",
        instruction=question,
        input=context_window(context, max(start, 0), len(answer)),
        response=answer,
        source=source,
        kind="extractive",
        where=where,
    )


def context_window(context: str, start: int, length: int, before: int = SQUAD_BEFORE, after: int = SQUAD_AFTER) -> str:
    """The part of ``context`` around ``[start, start+length)``, cut at whitespace."""
    if len(context) <= before + length + after:
        return context
    lo, hi = max(0, start - before), min(len(context), start + length + after)
    if lo > 0:
        space = context.find(" ", lo, start)
        lo = space + 1 if space >= 0 else lo
    if hi < len(context):
        space = context.rfind(" ", start + length, hi)
        hi = space if space >= 0 else hi
    return context[lo:hi]


def _instruction_record(item: Any, index: int, path: Path, source: str, where: str) -> Record:
    return Record(
        id=f"{source}:{path.name.split('.')[0]}:{index}",
        instruction=text_field(item, "instruction"),
        input=text_field(item, "input", required=False),
        response=text_field(item, "output"),
        source=source,
        where=where,
    )


def read_instruction(path: Path, source: str) -> Iterator[Record | BadRecord]:
    for index, item, line in json_members(path):
        where = f"{path}:{line}"
        yield guard(where, _instruction_record, item, index, path, source, where)


NAMED_READERS = {
    "medquad": read_medquad,
    "pubmedqa": read_pubmedqa,
    "medmcqa": read_medmcqa,
    "medqa": read_medqa,
    "mmlu": read_mmlu,
    "squad": read_squad,
    "instruction": read_instruction,
}
