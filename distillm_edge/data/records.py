"""The one record every reader produces, the label vocabularies, and text normalization.

A :class:`Record` is the standardized item (``id, instruction, input, response, source,
specialty, difficulty``) plus a few reader hints that tagging and decontamination use but that
are not saved (``subject``, ``kind``, ``question``). A :class:`BadRecord` is a malformed input
item: readers yield it instead of raising, so the pipeline can count and list it (or stop on it
with ``--strict``).

Two normalizations live here because every stage must agree on them:
- :func:`clean_text` — what we store: NFKC, no control/zero-width characters, spaces collapsed,
  lines trimmed, at most one blank line in a row.
- :func:`match_words` — what we compare (dedup, decontamination): ``clean_text`` + casefold,
  every run of non-alphanumeric characters is a word break.

Test: ``pytest tests/data/test_clean.py``.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

SPECIALTIES: tuple[str, ...] = (
    "cardiology",
    "pulmonology",
    "gastroenterology",
    "nephrology",
    "endocrinology",
    "neurology",
    "psychiatry",
    "infectious_disease",
    "oncology",
    "hematology",
    "pediatrics",
    "obstetrics_gynecology",
    "dermatology",
    "musculoskeletal",
    "ophthalmology",
    "otolaryngology",
    "pharmacology",
    "emergency_medicine",
    "genetics",
    "dentistry",
    "general",
)
"""Specialty labels (``general`` when no specialty lexicon matches); the trainer may weight by these."""

DIFFICULTY_STAGES: dict[int, str] = {
    1: "basic_anatomy",
    2: "clinical_knowledge",
    3: "differential_diagnosis",
    4: "treatment_planning",
}
"""The four curriculum stages of the research, easiest first."""

COLUMNS: tuple[str, ...] = ("id", "instruction", "input", "response", "source", "specialty", "difficulty")
"""Column names of the saved dataset, in order (the trainer relies on them)."""


@dataclasses.dataclass
class Record:
    """One standardized item. ``specialty`` "" and ``difficulty`` 0 mean "not labelled yet"."""

    id: str
    instruction: str
    input: str
    response: str
    source: str
    specialty: str = ""
    difficulty: int = 0
    subject: str = ""  # a subject/topic the source gives (MedMCQA subject_name, MMLU subject, ...)
    kind: str = "open"  # open | mcq | yesno | extractive | dialogue
    question: str = ""  # the bare question when ``instruction`` adds options (MCQ); else ""
    choices: tuple[str, ...] = ()  # the options' texts (MCQ), for decontamination against the whole item
    where: str = ""  # file:line it came from, for messages
    words: tuple[list[str], list[str], list[str]] | None = dataclasses.field(default=None, repr=False)
    memo: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # results computed ahead (parallel.py)

    def row(self) -> dict:
        """The saved columns only."""
        return {c: getattr(self, c) for c in COLUMNS}

    def bare_question(self) -> str:
        return self.question or self.instruction

    def match(self) -> tuple[list[str], list[str], list[str]]:
        """:func:`match_words` of (instruction, input, response), computed once per record."""
        if self.words is None:
            self.words = (match_words(self.instruction), match_words(self.input), match_words(self.response))
        return self.words


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """A malformed input item: where it is and what is wrong (for people)."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\u2060\ufeff]")
_ASCII_CONTROL = str.maketrans({c: None for c in [*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]})
_BLANKS = re.compile(r"\n{3,}")
_NON_WORD = re.compile(r"[\W_]+")
_ASCII_NON_WORD = str.maketrans({chr(c): " " for c in range(128) if not chr(c).isalnum()})


def clean_text(text: str) -> str:
    """NFKC + whitespace normalization of stored text (keeps single newlines and one blank line).

    Control and zero-width characters are dropped, runs of spaces/tabs become one space, lines
    are trimmed. ASCII text skips NFKC (a no-op on it); tested equal to a regex reference.
    """
    if not text.isascii():
        text = _CONTROL.sub("", unicodedata.normalize("NFKC", text))
    elif not text.isprintable():
        text = text.translate(_ASCII_CONTROL)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" not in text:
        return " ".join(text.split())
    text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    if "\n\n\n" in text:
        text = _BLANKS.sub("\n\n", text)
    return text.strip()


def match_words(text: str) -> list[str]:
    """Casefolded alphanumeric words of ``text`` after NFKC: the unit of dedup and decontamination."""
    if text.isascii():
        return text.lower().translate(_ASCII_NON_WORD).split()
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split()


def match_text(text: str) -> str:
    """``match_words`` joined by single spaces (substring matching at word boundaries)."""
    return " ".join(match_words(text))
