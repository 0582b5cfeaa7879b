"""Prompt formats for the multiple-choice benchmarks, identical to lm-evaluation-harness's tasks.

A prompt is ``description + examples + doc_to_text(item)`` and each choice is scored as the
continuation ``" " + choice`` (the harness's ``target_delimiter``). Few-shot examples are
``doc_to_text(example) + " " + gold choice``, joined and followed by ``"\\n\\n"``.

- ``mmlu``: "The following are multiple choice questions (with answers) about {subject}.\\n\\n",
  then "{question.strip()}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:"; choices " A".." D"
  (lm-eval's ``mmlu`` default template).
- ``medqa``: "Question: {q}\\nA. ..\\n...D. ..\\nAnswer:" (lm-eval ``medqa_4options``).
- ``medmcqa``: "Question: {q}\\nChoices:\\nA. ..\\n...D. ..\\nAnswer:" (lm-eval ``medmcqa``).
- ``pubmedqa``: "Abstract: {contexts joined by \\n}\\nQuestion: {q}\\nAnswer:"; choices yes/no/maybe
  (lm-eval ``pubmedqa``); ``pubmedqa_no_context`` drops the abstract line.

Test: ``pytest tests/eval/test_prompts.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from distillm_edge.eval.mcq_data import LETTERS, PUBMEDQA_LABELS, MCQItem

FORMATS = ("mmlu", "medqa", "medmcqa", "pubmedqa", "pubmedqa_no_context")
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"


@dataclass(frozen=True)
class MCQTask:
    """One scored unit: a benchmark (or one MMLU subject) with its prompt format and examples."""

    name: str  # "mmlu_medical/anatomy", "medqa", "pubmedqa", "pubmedqa_no_context", ...
    group: str  # "mmlu_medical", "medqa", "medmcqa", "pubmedqa", "pubmedqa_no_context"
    format: str  # one of FORMATS
    items: tuple[MCQItem, ...]
    fewshot: tuple[MCQItem, ...] = ()
    description: str = ""
    source: str = ""
    sha256: str = ""

    @property
    def choices(self) -> tuple[str, ...]:
        return PUBMEDQA_LABELS if self.format.startswith("pubmedqa") else LETTERS


def mmlu_description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def doc_to_text(fmt: str, item: MCQItem) -> str:
    if fmt == "mmlu":
        options = "".join(f"{letter}. {text}\n" for letter, text in zip(LETTERS, item.options))
        return f"{item.question.strip()}\n{options}Answer:"
    if fmt == "medqa":
        options = "".join(f"{letter}. {text}\n" for letter, text in zip(LETTERS, item.options))
        return f"Question: {item.question}\n{options}Answer:"
    if fmt == "medmcqa":
        options = "".join(f"{letter}. {text}\n" for letter, text in zip(LETTERS, item.options))
        return f"Question: {item.question}\nChoices:\n{options}Answer:"
    if fmt == "pubmedqa":
        return f"Abstract: {item.context}\nQuestion: {item.question}\nAnswer:"
    if fmt == "pubmedqa_no_context":
        return f"Question: {item.question}\nAnswer:"
    raise ValueError(f"unknown prompt format {fmt!r}; expected one of {FORMATS}")


def fewshot_prefix(task: MCQTask) -> str:
    """The description and the labeled examples: the text every prompt of the task starts with."""
    shots = "".join(
        doc_to_text(task.format, ex) + TARGET_DELIMITER + task.choices[ex.answer] + FEWSHOT_DELIMITER
        for ex in task.fewshot
    )
    return task.description + shots


def context(task: MCQTask, item: MCQItem) -> str:
    return fewshot_prefix(task) + doc_to_text(task.format, item)


def continuations(task: MCQTask) -> list[str]:
    return [TARGET_DELIMITER + c for c in task.choices]


def describe(task: MCQTask) -> str:
    """A one-line record of the prompt format for the run manifest."""
    example = context(task, task.items[0]) + continuations(task)[0]
    return f"{task.format}, {len(task.fewshot)}-shot, choices {list(continuations(task))}; e.g. {example[-160:]!r}"
