"""Abbreviation expansion from sense inventories (off by default).

Tables: a small built-in one (``builtin/abbreviations.tsv``: ~50 clinical abbreviations with one
meaning, e.g. COPD, DKA, HbA1c) plus any ``--abbrev PATH`` in either layout of
``../shared/data/abbrev``:
- clinical inventory TSV with header ``abbreviation, expansion, source, frequency``;
- MeDAL/ADAM TSV with header ``PREFERRED_AB, VARIANT_AB, EXPANSION`` (``VARIANT_AB`` lists the
  surface forms, ``BP:15|bp:1``; each is indexed).
All tables are merged: an abbreviation's senses are the distinct expansions (compared
casefolded, punctuation-free) over every table loaded.

A token is a candidate when it has at least two capital letters (``COPD``, ``HbA1c``,
``NSAIDs``), is not a Roman numeral up to XXXIX or an English word in capitals (``IV``, ``NO``, ``OR``), and
is in the tables (case-sensitive). Then, per record:
- if one of its senses is already written out in the record, it is defined: left alone;
- if it has exactly one sense, or exactly one of its senses fits the context (all of that
  sense's content words, two or more, appear elsewhere in the record: ``PE`` in a record that
  says "embolism" and "pulmonary" but not "physical" and "examination"), its first occurrence
  becomes ``expansion (ABBR)``; later occurrences stay as written;
- otherwise it is ambiguous and left as written.
Counts per abbreviation (expanded / ambiguous) go to ``stats.json``.

Why off by default: clinicians and benchmark questions write abbreviations, so the student
should see them; expansion is a choice for corpora full of unexplained shorthand. Turn it on
with ``--expand-abbreviations`` (built-in table) or ``--abbrev PATH`` (adds tables).

Test: ``pytest tests/data/test_abbrev.py``.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from distillm_edge.data.records import Record, match_text, match_words
from distillm_edge.errors import UserError

BUILTIN_TABLE = Path(__file__).parent / "builtin" / "abbreviations.tsv"
CANDIDATE = re.compile(r"(?<![\w-])[A-Za-z0-9]*[A-Z][A-Za-z0-9]*[A-Z][A-Za-z0-9]*(?![\w-])")
ROMAN = re.compile(r"^X{0,3}(IX|IV|V?I{0,3})$")  # I..XXXIX: "type IV", not "MI" or "LV"
CAPS_WORDS = frozenset(
    "a an and are as at be by do for go he if in is it me my no not of on or our so the to up us we "
    "all any can did few has her him his how its may new now off old one out own per she too two was "
    "who why yes you ok am pm uk tv id na".split()
)
STOP = frozenset("a an and of the in on for to with by or at from".split())


class AbbreviationTable:
    """abbreviation → {normalized expansion: display form} over all loaded tables."""

    def __init__(self) -> None:
        self.senses: dict[str, dict[str, str]] = {}

    def add(self, abbreviation: str, expansion: str) -> None:
        abbreviation, expansion = abbreviation.strip(), " ".join(expansion.split())
        key = match_text(expansion)
        if not abbreviation or not key or key == match_text(abbreviation):
            return
        senses = self.senses.setdefault(abbreviation, {})
        shown = senses.get(key)
        if shown is None or sum(c.isupper() for c in expansion) < sum(c.isupper() for c in shown):
            senses[key] = expansion  # prefer the least capitalized spelling ("hypertension")

    def load(self, path: str | Path) -> AbbreviationTable:
        """Add a TSV in either supported layout; anything else is a UserError naming the file."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"--abbrev {path}: file not found.")
        with open(path, encoding="utf-8", newline="") as fh:
            rows = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = [h.strip() for h in next(rows, [])]
            if header[:2] == ["abbreviation", "expansion"]:
                for row in rows:
                    if len(row) >= 2:
                        self.add(row[0], row[1])
            elif header[:3] == ["PREFERRED_AB", "VARIANT_AB", "EXPANSION"]:
                for row in rows:
                    if len(row) >= 3:
                        self.add(row[0], row[2])
                        for variant in row[1].split("|"):
                            self.add(variant.rsplit(":", 1)[0], row[2])
            else:
                raise UserError(
                    f"{path}:1: unknown abbreviation table header {header!r}; expected a TSV with "
                    "'abbreviation<TAB>expansion<TAB>source<TAB>frequency' or "
                    "'PREFERRED_AB<TAB>VARIANT_AB<TAB>EXPANSION'."
                )
        return self


def load_tables(paths: Iterable[str | Path]) -> AbbreviationTable:
    table = AbbreviationTable().load(BUILTIN_TABLE)
    for path in paths:
        table.load(path)
    return table


def _fits(sense: str, words: set[str]) -> bool:
    """All content words (2 or more) of a sense appear somewhere in the record."""
    content = [w for w in sense.split() if w not in STOP]
    return len(content) >= 2 and all(w in words for w in content)


class Expander:
    """Expands abbreviations in records and counts what it did."""

    def __init__(self, table: AbbreviationTable):
        self.table = table
        self.expanded: Counter[str] = Counter()
        self.ambiguous: Counter[str] = Counter()
        self.defined = 0

    def choose(self, abbreviation: str, text_key: str, words: set[str]) -> str | None:
        """The display expansion to use, or None (already defined or ambiguous)."""
        senses = self.table.senses[abbreviation]
        if any(f" {key} " in text_key for key in senses):
            self.defined += 1
            return None
        if len(senses) == 1:
            return next(iter(senses.values()))
        fitting = [shown for key, shown in senses.items() if _fits(key, words)]
        if len(fitting) == 1:
            return fitting[0]
        self.ambiguous[abbreviation] += 1
        return None

    def expand(self, record: Record) -> Record:
        """Rewrite the first occurrence of each expandable abbreviation in the record."""
        fields = (record.instruction, record.input, record.response)
        found = [m for text in fields for m in CANDIDATE.findall(text)]
        todo = [t for t in dict.fromkeys(found) if t in self.table.senses and not ROMAN.match(t) and t.lower() not in CAPS_WORDS]
        if not todo:
            return record
        words_list = match_words("\n".join(fields))
        text_key, words = " " + " ".join(words_list) + " ", set(words_list)
        for abbreviation in todo:
            shown = self.choose(abbreviation, text_key, words)
            if shown is None:
                continue
            pattern = re.compile(rf"(?<![\w-]){re.escape(abbreviation)}(?![\w-])")
            replacement = f"{shown} ({abbreviation})".replace("\\", "\\\\")
            for name in ("instruction", "input", "response"):
                text = getattr(record, name)
                new = pattern.sub(replacement, text, count=1)
                if new != text:
                    setattr(record, name, new)
                    self.expanded[abbreviation] += 1
                    break
        record.words = None
        return record

    def summary(self, top: int = 50) -> dict:
        return {
            "expanded": sum(self.expanded.values()),
            "ambiguous_left": sum(self.ambiguous.values()),
            "already_defined": self.defined,
            "expanded_by_abbreviation": dict(self.expanded.most_common(top)),
            "ambiguous_by_abbreviation": dict(self.ambiguous.most_common(top)),
        }


def expand_abbreviations(records: Iterable[Record], expander: Expander) -> Iterator[Record]:
    for record in records:
        yield expander.expand(record)
