"""Eval conventions: the split is in every task id, MMLU's test split is scored by default when the
folder has one (as lm-eval does), and the BOS token is added exactly as lm-eval's ``hf`` model adds it.

BOS: lm-eval 0.4.13's ``HFLM`` defaults ``add_bos_token=None``, which defers to the tokenizer
(lm-eval PR #3347; before it, the default was False with a Gemma exception). So a Llama-3 style
tokenizer (its post-processor prepends ``<|begin_of_text|>``) gets its BOS, a SmolLM2 style one
none; the test compares our context/continuation ids with ``HFLM._encode_pair`` on tiny models.

Run: ``pytest tests/eval/test_conventions.py``.
"""

from __future__ import annotations

import pytest

from distillm_edge.eval.config import EvalConfig
from distillm_edge.eval.mcq_data import MMLU_MEDICAL
from distillm_edge.eval.run import build_tasks

CORPUS = ["The patient has a fever and a cough.", "Which of the following is the answer? A. yes B. no",
          "Insulin is secreted by beta cells of the pancreas."] * 4


def write_mmlu(root, splits=("dev", "val", "test")):
    for split in splits:
        (root / split).mkdir(parents=True, exist_ok=True)
        for subject in MMLU_MEDICAL:
            rows = [f'"{split} question {i} about {subject}?",a{i},b{i},c{i},d{i},{"ABCD"[i % 4]}' for i in range(5)]
            (root / split / f"{subject}_{split}.csv").write_text("\n".join(rows) + "\n")


def write_others(root):
    import json

    (root / "medqa").mkdir()
    (root / "medqa" / "US_4options_dev.jsonl").write_text(json.dumps(
        {"question": "q?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "B"}) + "\n")
    (root / "medmcqa").mkdir()
    (root / "medmcqa" / "dev.jsonl").write_text(json.dumps(
        {"question": "q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 1}) + "\n")
    (root / "pubmedqa").mkdir()
    (root / "pubmedqa" / "pqal_dev.json").write_text(json.dumps(
        {"1": {"QUESTION": "q?", "CONTEXTS": ["c"], "final_decision": "yes"}}))


def test_mmlu_scores_test_by_default_when_present(tmp_path):
    write_mmlu(tmp_path / "mmlu")
    tasks = build_tasks(EvalConfig(model="m", data_dir=str(tmp_path)))
    assert [t.name for t in tasks][:2] == ["mmlu_medical_test/anatomy", "mmlu_medical_test/clinical_knowledge"]
    assert tasks[0].items[0].question == "test question 0 about anatomy?"
    assert tasks[0].source.endswith("test/anatomy_test.csv")
    val = build_tasks(EvalConfig(model="m", data_dir=str(tmp_path), split="val"))
    assert val[0].name == "mmlu_medical_val/anatomy" and val[0].items[0].question.startswith("val question")


def test_mmlu_falls_back_to_val_without_a_test_folder(tmp_path):
    write_mmlu(tmp_path / "mmlu", splits=("dev", "val"))
    tasks = build_tasks(EvalConfig(model="m", data_dir=str(tmp_path), num_fewshot=1))
    assert {t.group for t in tasks} == {"mmlu_medical_val"} and tasks[0].items[0].question.startswith("val question")


def test_every_task_id_names_its_split(tmp_path):
    write_mmlu(tmp_path / "mmlu", splits=("dev", "val"))
    write_others(tmp_path)
    cfg = EvalConfig(model="m", data_dir=str(tmp_path), tasks=("mmlu_medical", "medqa", "medmcqa", "pubmedqa"))
    names = [t.name for t in build_tasks(cfg)]
    assert names[8:] == ["medqa_dev", "medmcqa_dev", "pubmedqa_pqal_dev", "pubmedqa_pqal_dev_no_context"]
    assert all(n.startswith("mmlu_medical_val/") for n in names[:8])


# --- BOS --------------------------------------------------------------------------------------


def tiny_model_and_tokenizer(bos_template: bool, model_type: str = "llama"):
    """A byte-level BPE tokenizer (optionally prepending <|begin_of_text|>, as Llama-3's does) and a
    2-layer random model of ``model_type`` over its vocabulary."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        special_tokens=specials, show_progress=False))
    if bos_template:
        tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                           special_tokens=[("<|begin_of_text|>", 0)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=len(hf), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                                  bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return AutoModelForCausalLM.from_config(config).eval(), hf


@pytest.mark.parametrize(("bos", "model_type"), [(True, "llama"), (False, "llama"), (True, "gemma3_text")])
def test_bos_is_added_as_lm_eval_hflm_adds_it(bos, model_type):
    import torch
    from lm_eval.models.huggingface import HFLM

    from distillm_edge.backends.torch_backend import TorchBackend
    from distillm_edge.eval.mcq_data import MCQItem
    from distillm_edge.eval.prompts import MCQTask, context, continuations, mmlu_description
    from distillm_edge.eval.scoring import encode_choices

    before = torch.get_num_threads()
    try:
        model, tok = tiny_model_and_tokenizer(bos, model_type)
        backend = TorchBackend("tiny", model=model, tokenizer=tok, threads=1)
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=1, device="cpu")
        task = MCQTask("mmlu_medical_val/anatomy", "mmlu_medical_val", "mmlu",
                       (MCQItem("t:1", "Insulin is secreted by", ("alpha", "beta", "delta", "acinar"), 1),),
                       description=mmlu_description("anatomy"))
        ctx = context(task, task.items[0])
        ours_ctx, ours_conts = encode_choices(backend, ctx, continuations(task))
        for cont, ours in zip(continuations(task), ours_conts):
            theirs_ctx, theirs_cont = lm._encode_pair(ctx, cont)
            assert (ours_ctx, ours) == (theirs_ctx, theirs_cont)
        assert (ours_ctx[0] == tok.bos_token_id) == bos
    finally:
        torch.set_num_threads(before)
