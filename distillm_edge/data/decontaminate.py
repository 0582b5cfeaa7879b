"""Test-set isolation: drop every training record that overlaps a benchmark item.

``--decontaminate PATH`` takes benchmark files or folders (MMLU CSV folders, MedQA / MedMCQA
JSONL, PubMedQA JSON: anything :mod:`readers` reads). The whole training record (instruction +
context + response) is compared with the whole benchmark item: its stem and every choice (an
item without choices, e.g. PubMedQA, contributes its stem and its answer; contexts and MCQ
explanations are not part of the item). Text is normalized like everything else
(:func:`match_words`). A record is removed when:

1. **n-gram overlap** — it shares an ``n``-word n-gram (default 13, ``--ngram``) with the item's
   stem + choices read as one text. N-grams are taken over *content words*: words of one
   character are dropped on both sides, so option labels ("A.", "(b)", "1)") and the article "a"
   do not break a run. This catches a long stem alone, a generic stem followed by the verbatim
   options, an edited stem with verbatim options and a long answer alone;
2. **a long choice with company** — it contains one choice of at least ``MIN_CHOICE_WORDS`` (8)
   words verbatim together with, within ``CHOICE_WINDOW`` content words, the whole stem or
   another choice of the same item (for choices too short to hold an n-gram);
3. **a short stem** (no n-gram of its own: most MMLU questions) — it contains the stem's words
   as a contiguous run (exact words, one-character words included).

Exam boilerplate is not evidence of contamination. An n-gram is indexed only if it has at least
``MIN_INFORMATIVE_NGRAM`` (3) *informative* words — not numbers, not in :data:`GENERIC`
(stopwords and exam/vignette template words: "which of the following is the most likely cause
of this patient's", "comes to the emergency department because of", vital signs). Without this,
MMLU's vignette templates removed 55 unrelated MedQA questions from the shared data. A copied
question still shares its informative n-grams, so copies are still caught. A short stem needs
``MIN_WORDS`` (3) words and one informative word ("Which of the following statements is
correct?" and "The pleura" are too generic to match alone); companions in rule 2 need one
informative word. Items with nothing to match (a generic stem and short choices) are listed as
unmatched in ``stats.json``.

Each removal names the benchmark item it matched and the matching text.

Fast path: records are checked 512 at a time; a numpy pass computes a 64-bit rolling hash of
every n-gram and looks it up in the sorted hashes of the benchmark n-grams, and only the records
with a hit are checked exactly (tuples, so a hash collision cannot remove anything). Short stems
and long choices are indexed by an anchor word (their rarest word within the benchmark, longest
on ties), so a record is compared only with those whose anchor it contains. Both paths are
tested against :func:`contaminated_naive` (brute force).

Test: ``pytest tests/data/test_decontaminate.py tests/data/test_planted_leaks.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import accumulate
from pathlib import Path

import numpy as np

from distillm_edge.data.readers import expand_inputs, read_input
from distillm_edge.data.records import BadRecord, Record, match_words
from distillm_edge.data.report import Report
from distillm_edge.errors import UserError

MIN_WORDS = 3
MIN_INFORMATIVE_NGRAM = 3
MIN_CHOICE_WORDS = 8
CHOICE_WINDOW = 100  # content words either side of a long choice where its stem or another choice must be
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


def content_words(words: Iterable[str]) -> list[str]:
    """``words`` without one-character words (option labels A-E / 1-9, the article "a")."""
    return [w for w in words if len(w) > 1]


def find_run(words: list[str], run: list[str], lo: int = 0, hi: int | None = None) -> int:
    """Start of the first occurrence of ``run`` as a contiguous run in ``words[lo:hi]``, else -1."""
    hi = len(words) if hi is None else min(hi, len(words))
    k = len(run)
    if not k:
        return -1
    first = run[0]
    for i in range(max(lo, 0), hi - k + 1):
        if words[i] == first and words[i : i + k] == run:
            return i
    return -1


def _has_ngram(words: list[str], n: int) -> bool:
    """Whether ``words`` hold an ``n``-gram with enough informative words to be indexed."""
    return next(_informative_grams(words, n), None) is not None


def _anchor_index(entries: list[tuple[list[str], object]]) -> dict[str, list[tuple[list[str], int, object]]]:
    """Index word runs by their rarest word (longest on ties): ``{word: [(run, offset, payload)]}``."""
    df = Counter(w for words, _ in entries for w in set(words))
    index: dict[str, list[tuple[list[str], int, object]]] = {}
    for words, payload in entries:
        offset = min(range(len(words)), key=lambda i: (df[words[i]], -len(words[i]), i))
        index.setdefault(words[offset], []).append((list(words), offset, payload))
    return index


def _anchored_hits(words: list[str], present: set[str], index: dict) -> Iterator[tuple[int, list[str], object]]:
    """``(start, run, payload)`` of every indexed run found in ``words``, leftmost first."""
    for p, word in [(p, w) for p, w in enumerate(words) if w in present]:
        for run, offset, payload in index[word]:
            start = p - offset
            if start >= 0 and words[start] == run[0] and words[start : start + len(run)] == run:
                yield start, run, payload


def _informative_grams(words: list[str], n: int) -> Iterator[int]:
    """Start of every ``n``-gram of ``words`` with at least MIN_INFORMATIVE_NGRAM informative words."""
    counts = [0, *accumulate(w not in GENERIC and not w.isdigit() for w in words)]
    return (i for i in range(len(words) - n + 1) if counts[i + n] - counts[i] >= MIN_INFORMATIVE_NGRAM)


class BenchmarkIndex:
    """Content-word n-grams of whole benchmark items, their short stems and their long choices."""

    def __init__(self, n: int = 13):
        self.n = n
        self.ngrams: dict[tuple[str, ...], str] = {}
        self.short: dict[str, list[tuple[list[str], int, str]]] = {}
        self.choices: dict[str, list[tuple[list[str], int, tuple[str, int]]]] = {}
        self.parts: dict[str, tuple[list[str], list[list[str]]]] = {}  # items with a long choice: stem, choices
        self.items = 0
        self.too_generic: list[str] = []
        self.per_file: dict[str, int] = {}
        self._pending: list[tuple[tuple[str, ...], str]] = []
        self._pending_choices: list[tuple[list[str], tuple[str, int]]] = []

    def add(self, bench_id: str, question: str, choices: Iterable[str] = ()) -> None:
        """Index one item: its stem (``question``) and its choices (or, for an open item, its answer)."""
        words = tuple(match_words(question))
        stem = content_words(words)
        options = [content_words(match_words(c)) for c in choices]
        self.items += 1
        indexed = False
        text = stem + [w for option in options for w in option]
        for i in _informative_grams(text, self.n):
            self.ngrams.setdefault(tuple(text[i : i + self.n]), bench_id)
            indexed = True
        if not _has_ngram(stem, self.n) and len(words) >= MIN_WORDS and informative(words) >= 1:
            self._pending.append((words, bench_id))  # a stem without an n-gram of its own is matched whole
            indexed = True
        long = [j for j, option in enumerate(options) if len(option) >= MIN_CHOICE_WORDS and informative(option) >= 1]
        if long and len(options) > 1:
            self.parts[bench_id] = (stem, options)
            self._pending_choices.extend((options[j], (bench_id, j)) for j in long)
            indexed = True
        if not indexed:
            self.too_generic.append(bench_id)

    def finish(self) -> BenchmarkIndex:
        """Index short stems and long choices by anchor word (call once after :meth:`add`)."""
        self.short = _anchor_index(self._pending)
        self.choices = _anchor_index(self._pending_choices)
        self._pending, self._pending_choices = [], []
        return self

    def __getstate__(self) -> dict:
        # the n-gram hashes use Python's per-process string hash: each process recomputes its own
        return {k: v for k, v in self.__dict__.items() if k != "_gram_hashes"}

    def _hashes(self) -> np.ndarray:
        if getattr(self, "_gram_hashes", None) is None:
            count = len(self.ngrams) * self.n
            words = np.fromiter((hash(w) for g in self.ngrams for w in g), dtype=np.int64, count=count).view(np.uint64)
            words = words.reshape(len(self.ngrams), self.n)
            acc = words[:, 0].copy()
            for j in range(1, self.n):  # the rolling hash of _ngram_candidates (tested equal to _gram_hash)
                acc *= _P
                acc += words[:, j]
            self._gram_hashes = np.unique(acc)
        return self._gram_hashes

    def match(self, words: list[str]) -> tuple[str, str] | None:
        """``(benchmark id, matched text)`` of the first overlap with a record's ``words``, else None (exact).

        ``words`` are the record's :func:`match_words` (instruction + context + response).
        """
        return self.match_many([words], prefilter=False)[0]

    def match_many(self, word_lists: list[list[str]], prefilter: bool = True) -> list[tuple[str, str] | None]:
        """:meth:`match` for many records; a numpy pass over n-gram hashes picks the few to check."""
        contents = [content_words(w) for w in word_lists]
        flagged = self._ngram_candidates(contents) if prefilter else range(len(contents))
        out = []
        for i, (words, content) in enumerate(zip(word_lists, contents)):
            hit = self._ngram_match(content) if i in flagged else None
            if hit is None and (self.short or self.choices):
                present = set(words)
                hit = self._short_match(words, present) or self._choice_match(content, present)
            out.append(hit)
        return out

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

    def _short_match(self, words: list[str], present: set[str]) -> tuple[str, str] | None:
        anchors = self.short.keys() & present
        if anchors:
            for _, run, bench_id in _anchored_hits(words, anchors, self.short):
                return bench_id, " ".join(run)  # the first (leftmost) match wins
        return None

    def _choice_match(self, words: list[str], present: set[str]) -> tuple[str, str] | None:
        """A long choice found verbatim with the item's stem or another of its choices nearby."""
        anchors = self.choices.keys() & present
        for start, run, (bench_id, j) in _anchored_hits(words, anchors, self.choices):
            stem, options = self.parts[bench_id]
            lo, hi = start - CHOICE_WINDOW, start + len(run) + CHOICE_WINDOW
            companions = [(k, o) for k, o in enumerate(options) if k != j] + [(-1, stem)]
            for k, other in companions:
                if len(other) >= (MIN_WORDS if k < 0 else 1) and informative(other) >= 1:
                    # outside the long choice itself: before it or after it
                    if find_run(words, other, lo, start) >= 0 or find_run(words, other, start + len(run), hi) >= 0:
                        what = "the stem" if k < 0 else "another choice"
                        return bench_id, f"{' '.join(run)} (with {what}: {' '.join(other)})"
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
            # an MCQ item is its stem + every choice; an open item (PubMedQA, QA pairs) its question + answer
            index.add(item.id, item.bare_question(), item.choices or (item.response,))
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


def contaminated_naive(words: list[str], items: list[tuple[str, tuple[str, ...]]], n: int) -> bool:
    """Brute-force reference: do a record's ``words`` overlap any ``(stem, choices)`` item (same rules, no index)?"""
    content = " " + " ".join(content_words(words)) + " "
    text = " " + " ".join(words) + " "

    def within(run: list[str], hay: list[str]) -> bool:
        return bool(run) and " " + " ".join(run) + " " in " " + " ".join(hay) + " "

    cw = content_words(words)
    for question, choices in items:
        q = match_words(question)
        stem = content_words(q)
        options = [content_words(match_words(c)) for c in choices]
        whole = stem + [w for o in options for w in o]
        for i in range(len(whole) - n + 1):
            gram = whole[i : i + n]
            if sum(w not in GENERIC and not w.isdigit() for w in gram) >= MIN_INFORMATIVE_NGRAM:
                if " " + " ".join(gram) + " " in content:
                    return True
        if not _has_ngram(stem, n) and len(q) >= MIN_WORDS and any(w not in GENERIC and not w.isdigit() for w in q):
            if " " + " ".join(q) + " " in text:
                return True
        for j, option in enumerate(options):
            if len(options) < 2 or len(option) < MIN_CHOICE_WORDS or informative(option) < 1:
                continue
            for start in range(len(cw) - len(option) + 1):
                if cw[start : start + len(option)] != option:
                    continue
                before = cw[max(0, start - CHOICE_WINDOW) : start]
                after = cw[start + len(option) : start + len(option) + CHOICE_WINDOW]
                others = [o for k, o in enumerate(options) if k != j and informative(o) >= 1]
                if len(stem) >= MIN_WORDS and informative(stem) >= 1:
                    others.append(stem)
                if any(within(o, before) or within(o, after) for o in others):
                    return True
    return False
