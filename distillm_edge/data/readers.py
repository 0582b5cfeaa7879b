"""Turn one ``--input`` (file, folder or Hub dataset id) into a stream of records.

:func:`read_input` detects the format, picks a reader and yields :class:`Record` or
:class:`BadRecord` (file:line + reason) one item at a time, so nothing is held in memory beyond
one JSON file (JSONL, CSV and Parquet stream).

Detection (by extension, then by the first item's fields):
- ``.jsonl[.gz]``: MedMCQA (``opa``/``cop``), MedQA (``options``/``answer_idx``), MedQuAD
  (``qtype``/``focus``), otherwise generic JSONL;
- ``.json[.gz]``: SQuAD (``{"data": [...]}``), PubMedQA (``{id: {"QUESTION": ...}}``),
  instruction lists (``[{"instruction", "input", "output"}]``), otherwise a generic list of objects;
- ``.csv[.gz]``: MMLU (no header, 6 columns, letter answer), otherwise generic CSV with a header;
  ``.tsv`` generic; ``.parquet`` generic;
- a name that is not a path (``owner/name`` or ``owner/name:split``): a Hugging Face Hub dataset
  through ``datasets`` (streamed; needs network access).

Generic rows recognise the common field names without a mapping: instruction ← instruction /
question / prompt / query; input ← input / context; response ← response / output / answer /
completion; ``id``, ``specialty`` and ``difficulty`` are kept when present. ``--columns
instruction=Q,response=A`` overrides any of them. A folder is read as all its data files, sorted.

Test: ``pytest tests/data/test_readers.py``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from distillm_edge.data.formats import NAMED_READERS, Malformed, csv_rows, guard, text_field
from distillm_edge.data.jsonfile import first_member, iter_jsonl, json_members, read_text
from distillm_edge.data.records import DIFFICULTY_STAGES, SPECIALTIES, BadRecord, Record
from distillm_edge.errors import UserError

BUILTIN_CORPUS = Path(__file__).parent / "builtin" / "medical_qa.jsonl"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
FORMATS = (*NAMED_READERS, "jsonl", "json", "csv", "tsv", "parquet", "hub")
FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "question", "prompt", "query"),
    "input": ("input", "context"),
    "response": ("response", "output", "answer", "completion"),
    "id": ("id",),
    "specialty": ("specialty",),
    "difficulty": ("difficulty",),
}
REQUIRED = ("instruction", "response")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?(:[\w.-]+)?$")
_SPLIT_SUFFIX = re.compile(r"([_-](train|dev|val|valid|validation|test))$")


def supported() -> str:
    return (
        "JSONL (.jsonl, .jsonl.gz: MedQuAD, MedMCQA, MedQA or generic), JSON (.json: PubMedQA, "
        "SQuAD/COVID-QA, instruction lists, generic lists), CSV (.csv: MMLU or generic with a header), "
        ".tsv, .parquet, a folder of these, or a Hugging Face Hub id (owner/name[:split])"
    )


def data_suffix(path: Path) -> str:
    """``.jsonl`` for ``x.jsonl.gz``; ``""`` when not a data file."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes and suffixes[-1] in DATA_SUFFIXES else ""


def source_name(path: Path) -> str:
    """A short source label from a file name: ``covid-qa-train.json`` → ``covid-qa``; the built-in corpus is ``builtin``."""
    if path.resolve() == BUILTIN_CORPUS.resolve():
        return "builtin"
    stem = path.name.split(".")[0].lower()
    return _SPLIT_SUFFIX.sub("", stem) or stem


def expand_inputs(specs: tuple[str, ...] | list[str]) -> list[str]:
    """Folders become their data files (sorted, recursive); files and Hub ids stay as they are."""
    out: list[str] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and data_suffix(p) and not p.name.startswith("."))
            if not files:
                raise UserError(f"--input {spec}: the folder holds no data files. Supported: {supported()}.")
            out.extend(str(p) for p in files)
        else:
            out.append(spec)
    return out


def is_hub_id(spec: str) -> bool:
    path = Path(spec)
    return not path.exists() and not data_suffix(path) and not spec.startswith((".", "/", "~")) and bool(_HUB_ID.match(spec))


def detect_format(path: Path) -> str:
    """The format name of a local file (see the module docstring); unknown → UserError."""
    suffix = data_suffix(path)
    if suffix == ".jsonl":
        for _, obj in iter_jsonl(path):
            if isinstance(obj, BadRecord):
                break
            keys = set(obj)
            if {"opa", "opb", "cop"} <= keys:
                return "medmcqa"
            if {"question", "options", "answer_idx"} <= keys:
                return "medqa"
            if {"question", "answer"} <= keys and keys & {"qtype", "focus"}:
                return "medquad"
            break
        return "jsonl"
    if suffix == ".json":
        text = read_text(path)
        if re.match(r'\s*\{\s*"data"\s*:', text[:4096]):
            return "squad"
        opener, first = first_member(path, text)
        if opener == "{" and first is not None:
            key, value = first
            if key == "data":
                return "squad"
            if isinstance(value, dict) and "QUESTION" in value:
                return "pubmedqa"
            raise UserError(
                f"{path}: a JSON object that is neither SQuAD ({{'data': [...]}}) nor PubMedQA "
                f"({{id: {{'QUESTION': ...}}}}). Supported: {supported()}."
            )
        if opener == "[" and first is not None and isinstance(first[1], dict) and {"instruction", "output"} <= set(first[1]):
            return "instruction"
        return "json"
    if suffix == ".csv":
        for _, row in csv_rows(path):
            if isinstance(row, BadRecord):
                break
            lowered = {c.strip().lower() for c in row}
            if len(row) == 6 and row[5].strip().upper() in ("A", "B", "C", "D") and not lowered & set(FIELD_NAMES["instruction"]):
                return "mmlu"
            break
        return "csv"
    if suffix in (".tsv", ".parquet"):
        return suffix[1:]
    raise UserError(f"{path}: unknown data format '{''.join(path.suffixes) or path.name}'. Supported: {supported()}.")


def read_input(spec: str, columns: Mapping[str, str] | None = None, fmt: str | None = None) -> Iterator[Record | BadRecord]:
    """Records of one ``--input`` (a file or Hub id; expand folders first with :func:`expand_inputs`).

    ``fmt`` skips detection when the caller already ran :func:`detect_format`.
    """
    columns = dict(columns or {})
    path = Path(spec).expanduser()
    if not path.exists():
        if is_hub_id(spec):
            yield from read_hub(spec, columns)
            return
        raise UserError(f"--input {spec}: file not found (and not a Hub dataset id such as owner/name).")
    fmt = fmt or detect_format(path)
    if fmt in NAMED_READERS:
        yield from NAMED_READERS[fmt](path, fmt if fmt not in ("squad", "instruction") else source_name(path))
    else:
        yield from read_generic(path, fmt, columns, source_name(path))


def resolve_columns(available: list[str], columns: Mapping[str, str], where: str) -> dict[str, str]:
    """Map record fields → the file's column names; a missing column is a UserError naming both."""
    for field, column in columns.items():
        if field not in FIELD_NAMES:
            raise UserError(f"--columns {field}={column}: unknown field '{field}'; use one of {', '.join(FIELD_NAMES)}.")
        if column not in available:
            raise UserError(
                f"{where}: no column '{column}' (from --columns {field}={column}); its columns are: "
                f"{', '.join(available) or '(none)'}."
            )
    mapping = dict(columns)
    lowered = {c.lower(): c for c in available}
    for field, names in FIELD_NAMES.items():
        if field not in mapping:
            found = next((lowered[n] for n in names if n in lowered), None)
            if found is not None and found not in mapping.values():
                mapping[field] = found
    for field in REQUIRED:
        if field not in mapping:
            raise UserError(
                f"{where}: no column for '{field}' (looked for {', '.join(FIELD_NAMES[field])}); its columns are: "
                f"{', '.join(available) or '(none)'}. Name it with --columns {field}=<column>."
            )
    return mapping


def generic_record(row: Mapping[str, Any], mapping: Mapping[str, str], source: str, fallback_id: str, where: str) -> Record:
    """One generic row → Record; raises Malformed for missing/invalid fields."""
    rid = text_field(row, mapping["id"], required=False).strip() if "id" in mapping else ""
    specialty = text_field(row, mapping["specialty"], required=False).strip().lower() if "specialty" in mapping else ""
    if specialty and specialty not in SPECIALTIES:
        raise Malformed(f"specialty {specialty!r} is not one of {', '.join(SPECIALTIES)}")
    difficulty = 0
    if "difficulty" in mapping and row.get(mapping["difficulty"]) not in (None, ""):
        raw = row[mapping["difficulty"]]
        try:
            difficulty = int(raw)
        except (TypeError, ValueError):
            difficulty = -1
        if difficulty not in DIFFICULTY_STAGES or isinstance(raw, bool):
            raise Malformed(f"difficulty should be 1-4, got {raw!r}")
    return Record(
        id=f"{source}:{rid or fallback_id}",
        instruction=text_field(row, mapping["instruction"]),
        input=text_field(row, mapping["input"], required=False) if "input" in mapping else "",
        response=text_field(row, mapping["response"]),
        source=source,
        specialty=specialty,
        difficulty=difficulty,
        where=where,
    )


def read_generic(path: Path, fmt: str, columns: Mapping[str, str], source: str) -> Iterator[Record | BadRecord]:
    """Generic JSONL / JSON list / CSV / TSV / Parquet rows with a column mapping.

    The mapping is resolved per set of field names (JSON rows need not all have the same
    fields, e.g. an optional ``context``). If the first row lacks a required column the whole
    file is wrong (UserError); a later row that lacks one is a malformed record.
    """
    mappings: dict[frozenset[str], dict[str, str] | str] = {}
    first = True
    for where, fallback, row in _generic_rows(path, fmt):
        if isinstance(row, BadRecord):
            yield row
            continue
        if not isinstance(row, dict):
            yield BadRecord(where, f"expected an object with fields, got {type(row).__name__}")
            continue
        keys = frozenset(row)
        mapping = mappings.get(keys)
        if mapping is None:
            try:
                mapping = resolve_columns(list(row), columns, str(path))
            except UserError as exc:
                if first:
                    raise
                mapping = str(exc).split(": ", 1)[-1]
            if len(mappings) < 1000:
                mappings[keys] = mapping
        first = False
        if isinstance(mapping, str):
            yield BadRecord(where, mapping)
        else:
            yield guard(where, generic_record, row, mapping, source, fallback, where)


def _generic_rows(path: Path, fmt: str) -> Iterator[tuple[str, str, Any]]:
    """``(where, fallback id, row dict or BadRecord)`` for a generic file."""
    name = path.name.split(".")[0]
    if fmt == "jsonl":
        for lineno, obj in iter_jsonl(path):
            yield f"{path}:{lineno}", f"{name}:{lineno}", obj
    elif fmt == "json":
        for index, obj, line in json_members(path):
            yield f"{path}:{line}", f"{name}:{index}", obj
    elif fmt in ("csv", "tsv"):
        header: list[str] | None = None
        for lineno, row in csv_rows(path, "," if fmt == "csv" else "\t"):
            if isinstance(row, BadRecord):
                yield row.where, "", row
            elif header is None:
                header = [c.strip() for c in row]
            elif len(row) != len(header):
                yield f"{path}:{lineno}", "", BadRecord(f"{path}:{lineno}", f"expected {len(header)} columns like the header, got {len(row)}")
            else:
                yield f"{path}:{lineno}", f"{name}:{lineno}", dict(zip(header, row, strict=True))
        if header is None:
            raise UserError(f"{path}: the file is empty (a generic CSV needs a header row).")
    elif fmt == "parquet":
        yield from _parquet_rows(path, name)


def _parquet_rows(path: Path, name: str) -> Iterator[tuple[str, str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({exc}).") from None
    index = 0
    for batch in reader.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            yield f"{path}: row {index + 1}", f"{name}:{index}", row
            index += 1


def read_hub(spec: str, columns: Mapping[str, str]) -> Iterator[Record | BadRecord]:
    """Stream a Hugging Face Hub dataset (``owner/name[:split]``, split defaults to train)."""
    name, _, split = spec.partition(":")
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    hint = "Download the data where there is network access and pass the file with --input PATH."
    if offline:
        raise UserError(f"--input {spec}: Hub datasets need network access, but HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set. {hint}")
    import datasets

    try:
        rows = datasets.load_dataset(name, split=split or "train", streaming=True)
        iterator = iter(rows)
        first = next(iterator, None)
    except Exception as exc:  # network, auth, missing dataset: all are the user's to fix
        raise UserError(f"--input {spec}: could not load this Hugging Face Hub dataset ({type(exc).__name__}: {exc}). {hint}") from None
    if first is None:
        return
    mapping = resolve_columns(list(first), columns, f"Hub dataset {spec}")
    source = name.split("/")[-1].lower()

    def all_rows() -> Iterator[Any]:
        yield first
        yield from iterator

    for index, row in enumerate(all_rows()):
        where = f"{spec} row {index + 1}"
        yield guard(where, generic_record, row, mapping, source, str(index), where)

