"""Multiple-choice benchmark loaders: MMLU (medical subjects), MedQA, MedMCQA, PubMedQA.

Each loader reads a local file in the layout of ``../shared/data`` (see its README) or, when no
local path is given and the Hub is reachable, the public Hub copy, and returns :class:`MCQItem`
rows (question, options, gold index, optional context) plus the sha256 of what it read. Bad
input names the file and line (or entry) and what is wrong; a subject or file with no rows is an
error, never a silent zero.

- MMLU: ``<dir>/<split>/<subject>_<split>.csv``, no header: question,A,B,C,D,answer-letter.
  Hub: ``cais/mmlu`` (splits dev / validation / test). :func:`resolve_mmlu_split` picks the split
  scored by default: test when there is one, as lm-eval does, else val.
- MedQA: JSONL with question, options{A..D}, answer_idx. Hub: ``GBaker/MedQA-USMLE-4-options``.
- MedMCQA: JSONL with question, opa..opd and ``cop`` — 1-based in the original release (our
  local file: 1 = opa), 0-based in the Hub copy ``openlifescienceai/medmcqa``.
- PubMedQA: JSON object id -> {QUESTION, CONTEXTS[], final_decision}. Hub: ``qiaojin/PubMedQA``
  (pqa_labeled).

Test: ``pytest tests/eval/test_mcq_data.py``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from distillm_edge.errors import UserError
from distillm_edge.io import sha256_file

MMLU_MEDICAL = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine", "medical_genetics",
                "nutrition", "professional_medicine", "virology")
LETTERS = ("A", "B", "C", "D")
PUBMEDQA_LABELS = ("yes", "no", "maybe")
_HUB_SPLIT = {"dev": "dev", "val": "validation", "test": "test"}


@dataclass(frozen=True)
class MCQItem:
    id: str  # where the row came from: "file:line", "file:id" or "hub-id:split:index"
    question: str
    options: tuple[str, ...]
    answer: int  # index into options
    context: str = ""  # PubMedQA's abstract


@dataclass(frozen=True)
class Loaded:
    items: tuple[MCQItem, ...]
    source: str  # a file path or "hub:<id>/<config>:<split>"
    sha256: str  # of the file ("" for Hub data, whose revision datasets records in its cache)


def _missing(path: Path, what: str) -> UserError:
    return UserError(f"{path}: {what} not found. Point --data-dir at a folder in the layout of "
                     "../shared/data (mmlu/, medqa/, medmcqa/, pubmedqa/), or --mmlu-dir at the MMLU folder.")


def _nonempty(items: list[MCQItem], source: str) -> tuple[MCQItem, ...]:
    if not items:
        raise UserError(f"{source}: no rows. A benchmark with no rows cannot be scored; check the file.")
    return tuple(items)


# --- MMLU ---------------------------------------------------------------------------------------


def read_mmlu_csv(path: Path) -> Loaded:
    """One MMLU subject/split CSV (no header: question,A,B,C,D,answer)."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, "MMLU file")
    items = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        line = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise UserError(f"{path}:{line}: not valid CSV ({exc}).") from None
            if not row or not any(cell.strip() for cell in row):
                line = reader.line_num + 1
                continue
            if len(row) != 6:
                raise UserError(f"{path}:{line}: expected 6 fields (question,A,B,C,D,answer), got {len(row)}.")
            answer = row[5].strip()
            if answer not in LETTERS:
                raise UserError(f"{path}:{line}: answer must be one of A, B, C, D, got {row[5]!r}.")
            items.append(MCQItem(f"{path.name}:{line}", row[0], tuple(row[1:5]), LETTERS.index(answer)))
            line = reader.line_num + 1
    return Loaded(_nonempty(items, str(path)), str(path), sha256_file(path))


def mmlu_file(root: Path, subject: str, split: str) -> Path:
    return Path(root) / split / f"{subject}_{split}.csv"


def resolve_mmlu_split(split: str, root: Path | None) -> str:
    """``auto`` → ``test`` when ``root`` has a ``test/`` folder or there is no local folder (the Hub's
    cais/mmlu has one; lm-eval's ``mmlu`` scores test), else ``val``; other splits stay as given."""
    if split != "auto":
        return split
    return "test" if root is None or (Path(root) / "test").is_dir() else "val"


def load_mmlu(subject: str, split: str, root: Path | None) -> Loaded:
    """A subject's rows from ``root`` (the MMLU folder) or, without one, from the Hub's cais/mmlu."""
    if subject not in MMLU_MEDICAL:
        raise UserError(f"MMLU subject '{subject}' is not one of the medical subjects: {', '.join(MMLU_MEDICAL)}.")
    if root is not None:
        return read_mmlu_csv(mmlu_file(root, subject, split))
    rows = _hub_rows("cais/mmlu", subject, _HUB_SPLIT[split])
    items = [MCQItem(f"cais/mmlu:{subject}:{i}", r["question"], tuple(r["choices"]), int(r["answer"]))
             for i, r in enumerate(rows)]
    source = f"hub:cais/mmlu/{subject}:{_HUB_SPLIT[split]}"
    return Loaded(_nonempty(items, source), source, "")


# --- MedQA / MedMCQA (JSONL) ---------------------------------------------------------------------


def _jsonl(path: Path):
    """Yield (line number, object) for each non-blank line; bad JSON names the line."""
    if not path.is_file():
        raise _missing(path, "benchmark file")
    with open(path, encoding="utf-8") as fh:
        for n, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{n}: not valid JSON ({exc.msg}, column {exc.colno}).") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}.")
            yield n, obj


def _field(obj: dict, key: str, where: str):
    if key not in obj or obj[key] is None:
        raise UserError(f"{where}: missing field '{key}'.")
    return obj[key]


def _medqa_item(obj: dict, where: str) -> MCQItem:
    options = _field(obj, "options", where)
    if not isinstance(options, dict) or sorted(options) != list(LETTERS):
        raise UserError(f"{where}: 'options' must map exactly A, B, C, D to texts (4-option MedQA).")
    answer = str(_field(obj, "answer_idx", where)).strip()
    if answer not in LETTERS:
        raise UserError(f"{where}: 'answer_idx' must be one of A, B, C, D, got {answer!r}.")
    return MCQItem(where, str(_field(obj, "question", where)), tuple(str(options[k]) for k in LETTERS),
                   LETTERS.index(answer))


def _medmcqa_item(obj: dict, where: str, one_based: bool) -> MCQItem:
    options = tuple(str(_field(obj, k, where)) for k in ("opa", "opb", "opc", "opd"))
    cop = _field(obj, "cop", where)
    lo = 1 if one_based else 0
    if isinstance(cop, bool) or not isinstance(cop, int) or not lo <= cop <= lo + 3:
        raise UserError(f"{where}: 'cop' must be an integer {lo}..{lo + 3} "
                        f"({'1-based' if one_based else '0-based'}), got {cop!r}.")
    return MCQItem(where, str(_field(obj, "question", where)), options, cop - lo)


def load_medqa(path: Path | None) -> Loaded:
    if path is not None:
        path = Path(path)
        items = [_medqa_item(obj, f"{path}:{n}") for n, obj in _jsonl(path)]
        return Loaded(_nonempty(items, str(path)), str(path), sha256_file(path))
    rows = _hub_rows("GBaker/MedQA-USMLE-4-options", None, "test")
    items = [_medqa_item(r, f"GBaker/MedQA-USMLE-4-options:test:{i}") for i, r in enumerate(rows)]
    return Loaded(_nonempty(items, "hub:GBaker/MedQA-USMLE-4-options"), "hub:GBaker/MedQA-USMLE-4-options:test", "")


def load_medmcqa(path: Path | None) -> Loaded:
    if path is not None:
        path = Path(path)
        items = [_medmcqa_item(obj, f"{path}:{n}", one_based=True) for n, obj in _jsonl(path)]
        return Loaded(_nonempty(items, str(path)), str(path), sha256_file(path))
    rows = _hub_rows("openlifescienceai/medmcqa", None, "validation")
    items = [_medmcqa_item(r, f"openlifescienceai/medmcqa:validation:{i}", one_based=False) for i, r in enumerate(rows)]
    return Loaded(_nonempty(items, "hub:openlifescienceai/medmcqa"), "hub:openlifescienceai/medmcqa:validation", "")


# --- PubMedQA -----------------------------------------------------------------------------------


def _pubmedqa_item(key: str, entry, where: str) -> MCQItem:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected an object with QUESTION, CONTEXTS, final_decision.")
    decision = str(_field(entry, "final_decision", where)).strip().lower()
    if decision not in PUBMEDQA_LABELS:
        raise UserError(f"{where}: 'final_decision' must be yes, no or maybe, got {decision!r}.")
    contexts = _field(entry, "CONTEXTS", where)
    if not isinstance(contexts, list):
        raise UserError(f"{where}: 'CONTEXTS' must be a list of strings.")
    return MCQItem(where, str(_field(entry, "QUESTION", where)), PUBMEDQA_LABELS,
                   PUBMEDQA_LABELS.index(decision), "\n".join(map(str, contexts)))


def load_pubmedqa(path: Path | None) -> Loaded:
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise _missing(path, "PubMedQA file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno}).") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object mapping PubMed ids to entries.")
        items = [_pubmedqa_item(k, v, f"{path}: entry '{k}'") for k, v in data.items()]
        return Loaded(_nonempty(items, str(path)), str(path), sha256_file(path))
    rows = _hub_rows("qiaojin/PubMedQA", "pqa_labeled", "train")
    items = [_pubmedqa_item(str(r["pubid"]), {"QUESTION": r["question"], "CONTEXTS": r["context"]["contexts"],
                                             "final_decision": r["final_decision"]}, f"qiaojin/PubMedQA:{i}")
             for i, r in enumerate(rows)]
    return Loaded(_nonempty(items, "hub:qiaojin/PubMedQA"), "hub:qiaojin/PubMedQA/pqa_labeled:train", "")


# --- Hub ----------------------------------------------------------------------------------------


def _hub_rows(dataset: str, config: str | None, split: str) -> list[dict]:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise UserError(f"no local file for this benchmark and the Hub is off (HF_HUB_OFFLINE=1), so "
                        f"{dataset} cannot be fetched. Pass --data-dir (a folder in the layout of ../shared/data).")
    import datasets

    try:
        return list(datasets.load_dataset(dataset, config, split=split))
    except Exception as exc:  # network, auth, missing config: say which dataset and how to avoid it
        raise UserError(f"could not load {dataset}{'/' + config if config else ''} ({split}) from the Hub: "
                        f"{type(exc).__name__}: {exc}. Pass --data-dir to use local files instead.") from None
