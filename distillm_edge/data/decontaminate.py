"""Test-set isolation: drop every training record that overlaps a benchmark question.

``--decontaminate PATH`` takes benchmark files or folders (MMLU CSV folders, MedQA / MedMCQA
JSONL, PubMedQA JSON: anything :mod:`readers` reads). From each benchmark item we take its bare
question (without the options), normalized like everything else (:func:`match_words`):

- a question of at least ``n`` words (default 13) contributes its ``n``-word n-grams; a
  training record is removed if any ``n``-gram of its text (instruction + context + response)
  is one of them;
- a shorter question (most MMLU questions) is matched whole: the record is removed if its
  normalized text contains the question's words as a contiguous run.

Exam boilerplate is not evidence of contamination. An n-gram is indexed only if it has at least
``MIN_INFORMATIVE_NGRAM`` (3) *informative* words — not numbers, not in :data:`GENERIC`
(stopwords and exam/vignette template words: "which of the following is the most likely cause
of this patient's", "comes to the emergency department because of", vital signs). Without this,
MMLU's vignette templates removed 55 unrelated MedQA questions from the shared data. A copied
question still shares its informative n-grams, so copies are still caught. A short question
needs ``MIN_WORDS`` (3) words and one informative word ("Which of the following statements is
correct?" and "The pleura" are too generic to match alone); such items are listed as
unmatched in ``stats.json``.

Each removal names the benchmark item it matched and the matching text.

Fast path: records are checked 512 at a time; a numpy pass computes a 64-bit rolling hash of
every n-gram and looks it up in the sorted hashes of the benchmark n-grams, and only the records
with a hit are checked exactly (tuples, so a hash collision cannot remove anything). Short
questions are indexed by an anchor word (their rarest word within the benchmark, longest on
ties), so a record is compared only with questions whose anchor it contains. Both paths are
tested against :func:`contaminated_naive` (brute force).

Test: ``pytest tests/data/test_decontaminate.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from distillm_edge.data.readers import expand_inputs, read_input
from distillm_edge.data.records import BadRecord, Record, match_words
from distillm_edge.data.report import Report
from distillm_edge.errors import UserError

MIN_WORDS = 3
MIN_INFORMATIVE_NGRAM = 3
GENERIC = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my no nor not
    now of off on once only or other our out over own same she should so some such than that the their them
    then there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your one two three four five first second
    following true false correct incorrect except statement statements best likely appropriate next step cause
    causes caused diagnosis patient patients s year years old man woman boy girl child infant comes brought
    presents presented physician doctor emergency department clinic office hospital history examination
    physical shows showed show abnormalities abnormality normal findings finding temperature pulse
    respirations respiration blood pressure mm hg min oximetry room air oxygen saturation day days week weeks
    month months hour hours wife husband mother father parents laboratory studies study management treatment
    explanation mechanism underlying associated result results shown include includes including c f kg cm
    m l dl mg g ml mmol mcg meq u gestation ago since started starting past currently well
    """.split()
)


def informative(words: Iterable[str]) -> int:
    """Number of words that are neither numbers nor in :data:`GENERIC`."""
    return sum(1 for w in words if w not in GENERIC and not w.isdigit())


class BenchmarkIndex:
    """Normalized n-grams and short questions of a set of benchmark items."""

    def __init__(self, n: int = 13):
        self.n = n
        self.ngrams: dict[tuple[str, ...], str] = {}
        self.short: dict[str, list[tuple[list[str], int, str]]] = {}
        self.items = 0
        self.too_generic: list[str] = []
        self.per_file: dict[str, int] = {}
        self._pending: list[tuple[tuple[str, ...], str]] = []

    def add(self, bench_id: str, question: str) -> None:
        words = tuple(match_words(question))
        self.items += 1
        if len(words) >= self.n:
            for i in range(len(words) - self.n + 1):
                gram = words[i : i + self.n]
                if informative(gram) >= MIN_INFORMATIVE_NGRAM:
                    self.ngrams.setdefault(gram, bench_id)
        elif len(words) >= MIN_WORDS and informative(words) >= 1:
            self._pending.append((words, bench_id))
        else:
            self.too_generic.append(bench_id)

    def finish(self) -> BenchmarkIndex:
        """Index the short questions by anchor word and hash the n-grams (call once after :meth:`add`)."""
        df = Counter(w for words, _ in self._pending for w in set(words))
        for words, bench_id in self._pending:
            offset = min(range(len(words)), key=lambda i: (df[words[i]], -len(words[i]), i))
            self.short.setdefault(words[offset], []).append((list(words), offset, bench_id))
        self._pending = []
        return self

    def __getstate__(self) -> dict:
        # the n-gram hashes use Python's per-process string hash: each process recomputes its own
        return {k: v for k, v in self.__dict__.items() if k != "_gram_hashes"}

    def _hashes(self) -> np.ndarray:
        if getattr(self, "_gram_hashes", None) is None:
            self._gram_hashes = np.unique(np.fromiter((_gram_hash(g) for g in self.ngrams), dtype=np.uint64, count=len(self.ngrams)))
        return self._gram_hashes

    def match(self, words: list[str]) -> tuple[str, str] | None:
        """``(benchmark id, matched text)`` of the first overlap with ``words``, else None (exact)."""
        return self._ngram_match(words) or self._short_match(words)

    def match_many(self, word_lists: list[list[str]]) -> list[tuple[str, str] | None]:
        """:meth:`match` for many records; a numpy pass over n-gram hashes picks the few to check."""
        flagged = self._ngram_candidates(word_lists)
        return [(self._ngram_match(w) if i in flagged else None) or self._short_match(w) for i, w in enumerate(word_lists)]

    def _ngram_match(self, words: list[str]) -> tuple[str, str] | None:
        n = self.n
        if self.ngrams and len(words) >= n:
            grams = zip(*(words[j:] for j in range(n)), strict=False)
            if not self.ngrams.keys().isdisjoint(grams):
                for i in range(len(words) - n + 1):
                    gram = tuple(words[i : i + n])
                    if gram in self.ngrams:
                        return self.ngrams[gram], " ".join(gram)
        return None

    def _ngram_candidates(self, word_lists: list[list[str]]) -> set[int]:
        """Indices of the lists with an n-gram whose hash is indexed (a superset of the true hits)."""
        n, lengths = self.n, [len(w) for w in word_lists]
        total = sum(lengths)
        if not self.ngrams or total < n:
            return set()
        flat = np.fromiter((hash(w) for words in word_lists for w in words), dtype=np.int64, count=total).view(np.uint64)
        m = total - n + 1
        acc = flat[:m].copy()
        for j in range(1, n):
            acc *= _P
            acc += flat[j : j + m]
        hashes = self._hashes()
        where = np.searchsorted(hashes, acc)
        hit = hashes[np.minimum(where, len(hashes) - 1)] == acc
        owner = np.repeat(np.arange(len(word_lists)), lengths)
        hit &= owner[:m] == owner[n - 1 :]  # an n-gram must not span two records
        return set(np.unique(owner[:m][hit]).tolist())

    def _short_match(self, words: list[str]) -> tuple[str, str] | None:
        if not self.short:
            return None
        present = self.short.keys() & set(words)
        if not present:
            return None
        for p, word in enumerate(words):  # the first (leftmost) match wins
            if word in present:
                for qwords, offset, bench_id in self.short[word]:
                    start = p - offset
                    if start >= 0 and words[start] == qwords[0] and words[start : start + len(qwords)] == qwords:
                        return bench_id, " ".join(qwords)
        return None


_P = np.uint64(0x100000001B3)


def _gram_hash(words: tuple[str, ...]) -> int:
    """The polynomial hash :meth:`BenchmarkIndex._ngram_candidates` computes with numpy (mod 2**64)."""
    acc = 0
    for w in words:
        acc = (acc * 0x100000001B3 + (hash(w) & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
    return acc


def load_benchmarks(paths: Iterable[str], n: int = 13) -> BenchmarkIndex:
    """Read benchmark files/folders into an index; a malformed benchmark item stops with its location."""
    index = BenchmarkIndex(n)
    for spec in expand_inputs(list(paths)):
        if not Path(spec).exists():
            raise UserError(f"--decontaminate {spec}: file not found.")
        count = 0
        for item in read_input(spec):
            if isinstance(item, BadRecord):
                raise UserError(f"--decontaminate: {item}. Fix the benchmark file; it must be read completely.")
            index.add(item.id, item.bare_question())
            count += 1
        index.per_file[spec] = count
    return index.finish()


def record_words(record: Record) -> list[str]:
    instruction, context, response = record.match()
    return instruction + context + response


def decontaminate(records: Iterable[Record], index: BenchmarkIndex, report: Report, batch: int = 512) -> Iterator[Record]:
    """Drop (and log, with the matched benchmark item) records that overlap the benchmarks."""
    buffer: list[Record] = []

    def flush() -> Iterator[Record]:
        todo = [r for r in buffer if "bench" not in r.memo]  # workers may have checked the others
        for record, hit in zip(todo, index.match_many([record_words(r) for r in todo]), strict=True):
            record.memo["bench"] = hit
        for record in buffer:
            hit = record.memo.pop("bench")
            if hit is None:
                yield record
            else:
                bench_id, text = hit
                report.remove(record, "decontaminated", f"shares text with benchmark item: {text!r}", bench_id)

    for record in records:
        buffer.append(record)
        if len(buffer) >= batch:
            yield from flush()
            buffer = []
    if buffer:
        yield from flush()


def contaminated_naive(words: list[str], questions: list[list[str]], n: int) -> bool:
    """Brute-force reference: does ``words`` overlap any question (same rules, no index)?"""
    text = " " + " ".join(words) + " "
    for q in questions:
        if len(q) >= n:
            for i in range(len(q) - n + 1):
                gram = q[i : i + n]
                if sum(w not in GENERIC and not w.isdigit() for w in gram) >= MIN_INFORMATIVE_NGRAM:
                    if " " + " ".join(gram) + " " in text:
                        return True
        elif len(q) >= MIN_WORDS and any(w not in GENERIC and not w.isdigit() for w in q):
            if " " + " ".join(q) + " " in text:
                return True
    return False
