"""Prompt strings are exactly lm-eval-harness's (MMLU default template and the medical tasks).

Run: ``pytest tests/eval/test_prompts.py``.
"""

from __future__ import annotations

from distillm_edge.eval.mcq_data import MCQItem
from distillm_edge.eval.prompts import MCQTask, context, continuations, doc_to_text, mmlu_description

Q = MCQItem("x:1", "  Which nerve?  ", ("Vagus", "Facial", "Optic", "None"), 2)
SHOT = MCQItem("x:2", "Which bone?", ("Femur", "Ulna", "Tibia", "Skull"), 0)


def test_mmlu_zero_and_few_shot():
    task = MCQTask("mmlu_medical/clinical_knowledge", "mmlu_medical", "mmlu", (Q,),
                   description=mmlu_description("clinical_knowledge"))
    assert context(task, Q) == ("The following are multiple choice questions (with answers) about clinical knowledge."
                                "\n\nWhich nerve?\nA. Vagus\nB. Facial\nC. Optic\nD. None\nAnswer:")
    assert continuations(task) == [" A", " B", " C", " D"]
    shots = MCQTask(task.name, task.group, "mmlu", (Q,), (SHOT, SHOT), task.description)
    example = "Which bone?\nA. Femur\nB. Ulna\nC. Tibia\nD. Skull\nAnswer: A\n\n"
    assert context(shots, Q) == task.description + example * 2 + doc_to_text("mmlu", Q)


def test_medical_task_formats():
    assert doc_to_text("medqa", Q) == "Question:   Which nerve?  \nA. Vagus\nB. Facial\nC. Optic\nD. None\nAnswer:"
    assert doc_to_text("medmcqa", Q).startswith("Question:   Which nerve?  \nChoices:\nA. Vagus\n")
    item = MCQItem("p", "Does it work?", ("yes", "no", "maybe"), 0, "Background.\nResults.")
    assert doc_to_text("pubmedqa", item) == "Abstract: Background.\nResults.\nQuestion: Does it work?\nAnswer:"
    assert doc_to_text("pubmedqa_no_context", item) == "Question: Does it work?\nAnswer:"
    assert continuations(MCQTask("pubmedqa", "pubmedqa", "pubmedqa", (item,))) == [" yes", " no", " maybe"]
