"""Planted benchmark leaks of four shapes are removed by decontamination; distinct records are kept.

Shapes (each planted inside an otherwise ordinary training record, with other option labels,
case and punctuation than the benchmark file):
- ``stem``: the item's stem alone (items whose stem has at least 13 words);
- ``options``: a generic stem ("Which of the following statements is false?") + the item's
  options verbatim;
- ``answer``: the gold choice alone, as a response (items whose gold choice has >= 13 words);
- ``edited``: the stem with a few words dropped + the options verbatim.
For ``options`` and ``edited`` the items are those whose options hold at least 13 words in all
(four one-word options are not evidence of anything). At least 95% of each shape must go and
none of the distinct records (same generic stems with other options, real MedQuAD records,
one short option with the stem) may. A synthetic set always runs; ``-m slow`` plants 20 leaks
of each shape from the real MMLU val/dev items in ``../shared/data`` and prints recall by shape.

Run: ``pytest tests/data/test_planted_leaks.py -m slow -s``.
"""

from __future__ import annotations

import csv
import random

import pytest

from distillm_edge.data.decontaminate import BenchmarkIndex, decontaminate, informative, load_benchmarks
from distillm_edge.data.readers import read_input
from distillm_edge.data.records import Record, match_words
from distillm_edge.data.report import Report

GENERIC_STEMS = ("Which of the following statements is false?", "Which of the following is true?",
                 "All of the following are correct EXCEPT:")
SHAPES = ("stem", "options", "answer", "edited")


def rec(rid: str, instruction: str, response: str = "Reviewed in class.", context: str = "") -> Record:
    return Record(rid, instruction, context, response, "t")


def labelled(options: list[str], style: int) -> str:
    """Options with another label style than the benchmark's "A. text"."""
    if style == 0:
        return "\n".join(f"({'abcd'[i]}) {o}" for i, o in enumerate(options))
    if style == 1:
        return "\n".join(f"{i + 1}) {o.upper()}" for i, o in enumerate(options))
    return " ".join(f"[{'ABCD'[i]}] {o};" for i, o in enumerate(options))


def plant(shape: str, k: int, stem: str, options: list[str], gold: int, rng: random.Random) -> Record:
    """One leak of ``shape`` built from a benchmark item."""
    if shape == "stem":
        return rec(f"leak:{shape}:{k}", f"Exam practice #{k}: {stem} Explain your reasoning.", "Think it through first.")
    if shape == "options":
        return rec(f"leak:{shape}:{k}", GENERIC_STEMS[k % 3] + "\n" + labelled(options, k % 3), f"The answer is {'abcd'[gold]}.")
    if shape == "answer":
        return rec(f"leak:{shape}:{k}", "Give the key fact in one sentence.", options[gold].rstrip(".") + " .")
    words = stem.split()
    drop = set(rng.sample(range(len(words)), min(3, max(1, len(words) // 4))))
    edited = " ".join(w for i, w in enumerate(words) if i not in drop)
    return rec(f"leak:{shape}:{k}", edited + "\n" + labelled(options, k % 3), f"Option {gold + 1}.")


def content(text: str) -> list[str]:
    """Words of ``text`` without one-character words (option labels)."""
    return [w for w in match_words(text) if len(w) > 1]


def n_content(text: str) -> int:
    return len(content(text))


def eligible(shape: str, stem: str, options: list[str], gold: int, n: int = 13) -> bool:
    if shape == "stem":
        return len(match_words(stem)) >= n
    if shape == "answer":
        return n_content(options[gold]) >= n
    words = [w for o in options for w in content(o)]
    return len(words) >= n and informative(words) >= 3  # not e.g. four numeric ratios


def recall(items: list[tuple[str, list[str], int]], index: BenchmarkIndex, distinct: list[Record], per_shape: int,
           seed: int = 0, answers: list | None = None) -> tuple[dict[str, tuple[int, int]], list[str], Report]:
    """Plant ``per_shape`` leaks of each shape; return {shape: (removed, planted)}, the distinct ids removed
    and the report."""
    rng = random.Random(seed)
    records, planted = [], {}
    for shape in SHAPES:
        pool = [it for it in (items + (answers or []) if shape == "answer" else items) if eligible(shape, *it)]
        chosen = rng.sample(pool, min(per_shape, len(pool)))
        planted[shape] = len(chosen)
        records += [plant(shape, k, *item, rng) for k, item in enumerate(chosen)]
    report = Report()
    kept = {r.id for r in decontaminate(records + distinct, index, report)}
    removed = {shape: (sum(1 for r in records if r.id.startswith(f"leak:{shape}:") and r.id not in kept), planted[shape])
               for shape in SHAPES}
    false_positives = [r.id for r in distinct if r.id not in kept]
    return removed, false_positives, report


def distinct_records(items: list[tuple[str, list[str], int]], other_text: list[str], rng: random.Random) -> list[Record]:
    """Records that share only generic stems, single short options or the topic with the items."""
    out = []
    for k, (_, options, _) in enumerate(items):
        fake = rng.sample(other_text, 4)
        out.append(rec(f"distinct:generic:{k}", GENERIC_STEMS[k % 3] + "\n" + labelled(fake, k % 3), "The answer is (b)."))
        short = min(options, key=n_content)
        if n_content(short) < 8:  # a choice of 13+ words alone is the "answer" leak, not a distinct record
            out.append(rec(f"distinct:short-option:{k}", f"{GENERIC_STEMS[k % 3]} Consider: {short}.", "It depends on the case."))
    return out


SYNTHETIC = [
    ("Which of the following statements is false?",
     ["Metformin lowers hepatic glucose output by activating AMP kinase in hepatocytes",
      "Sulfonylureas close ATP sensitive potassium channels on pancreatic beta cells",
      "Insulin glargine has a pronounced peak about four hours after injection",
      "SGLT2 inhibitors increase urinary glucose excretion in the proximal tubule"], 2),
    ("A 62-year-old smoker presents with painless jaundice, a palpable gallbladder and weight loss over three "
     "months. What is the most likely diagnosis?",
     ["Choledocholithiasis", "Carcinoma of the head of the pancreas", "Acute viral hepatitis", "Primary biliary cholangitis"], 1),
    ("What is the main mechanism of action of aspirin?",
     ["Irreversible acetylation of cyclooxygenase one in platelets which blocks thromboxane A2 synthesis for their lifetime",
      "Reversible inhibition of phosphodiesterase", "Blockade of the P2Y12 receptor", "Activation of antithrombin"], 0),
    ("Regarding the physiology of the loop of Henle, which is correct?",
     ["The thick ascending limb is impermeable to water", "The descending limb actively pumps sodium chloride",
      "Furosemide acts on the collecting duct principal cells", "Countercurrent multiplication needs no active transport"], 0),
]
OTHER_TEXT = [
    "Vaccination schedules differ between countries and age groups", "Hand washing reduces hospital infections markedly",
    "Regular exercise improves insulin sensitivity in most adults", "Smoking cessation lowers cardiovascular risk within years",
    "Iron deficiency is the commonest cause of anaemia worldwide", "Sleep apnoea is linked to resistant hypertension",
]


def test_synthetic_leaks_of_every_shape_are_removed_and_distinct_records_kept():
    index = BenchmarkIndex(13)
    for k, (stem, options, _) in enumerate(SYNTHETIC):
        index.add(f"b:{k}", stem, options)
    index.finish()
    rng = random.Random(0)
    distinct = distinct_records(SYNTHETIC, OTHER_TEXT, rng) + [
        rec("distinct:topic", "How does metformin work, and what are its side effects?", "It lowers glucose output."),
        rec("distinct:vignette", "A 40-year-old woman presents with painful jaundice and fever after a fatty meal.", "Cholangitis."),
    ]
    removed, false_positives, _ = recall(SYNTHETIC, index, distinct, per_shape=4)
    assert false_positives == []
    for shape, (hit, planted) in removed.items():
        assert planted >= 1 and hit == planted, (shape, hit, planted)


def test_long_choice_with_another_choice_is_removed_alone_it_is_kept():
    stem, options, _ = SYNTHETIC[0]
    index = BenchmarkIndex(13)
    index.add("b:0", stem, options)
    index.finish()
    # two choices (>= 8 words each), not adjacent and not in order: no 13-gram spans them
    both = rec("t:both", f"Note: {options[3]}.", f"Also remember that {options[0].lower()}!")
    alone = rec("t:alone", "Pharmacology fact.", options[1] + ", as every textbook says.")
    report = Report()
    assert [r.id for r in decontaminate([both, alone], index, report)] == ["t:alone"]
    assert "with another choice" in report.examples["decontaminated"][0]["reason"]


def mmlu_items(shared_data) -> list[tuple[str, list[str], int]]:
    """(stem, options, gold index) of every MMLU val and dev item, read with the csv module."""
    items = []
    for path in sorted((shared_data / "mmlu" / "val").glob("*.csv")) + sorted((shared_data / "mmlu" / "dev").glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as fh:
            items += [(row[0], row[1:5], "ABCD".index(row[5].strip())) for row in csv.reader(fh) if row]
    return items


@pytest.mark.slow
def test_real_mmlu_planted_leaks_recall_by_shape(shared_data):
    items = mmlu_items(shared_data)
    pubmedqa = [(r.question or r.instruction, [r.response], 0) for r in read_input(str(shared_data / "pubmedqa" / "pqal_dev.json"))]
    index = load_benchmarks([str(shared_data / "mmlu" / "val"), str(shared_data / "mmlu" / "dev"),
                             str(shared_data / "pubmedqa" / "pqal_dev.json")])
    assert len(items) == 174 + 40 and index.items == len(items) + len(pubmedqa) == 714
    rng = random.Random(1)
    other = [r.response for r in read_input(str(shared_data / "medquad" / "medquad_sample4k.jsonl"))]
    sentences = [s.strip() for text in other[:300] for s in text.split(". ") if 6 <= len(s.split()) <= 20]
    medquad = [rec(f"distinct:medquad:{i}", r.instruction, r.response)
               for i, r in enumerate(read_input(str(shared_data / "medquad" / "medquad_sample4k.jsonl"))) if i < 2000]
    distinct = distinct_records(items, sentences, rng) + medquad
    removed, false_positives, report = recall(items, index, distinct, per_shape=20, answers=pubmedqa)
    pools = {shape: sum(eligible(shape, *it) for it in (items + pubmedqa if shape == "answer" else items)) for shape in SHAPES}
    print("\nplanted-leak recall by shape (MMLU val+dev; answers also PubMedQA long answers; 13-grams): " + ", ".join(
        f"{shape} {hit}/{planted} (of {pools[shape]} eligible items)" for shape, (hit, planted) in removed.items())
        + f"; distinct records removed: {len(false_positives)}/{len(distinct)}")
    assert false_positives == [], [e for e in report.decontaminated if e["id"] in false_positives]
    for shape, (hit, planted) in removed.items():
        assert planted == 20 and hit >= 19, (shape, hit, planted)
