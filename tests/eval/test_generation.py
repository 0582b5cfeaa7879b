"""Generation data loaders (JSON, JSONL(.gz), save_to_disk; errors name file and line) and the
generation metrics on a tiny model, with perplexity checked against an independent computation.

Run: ``pytest tests/eval/test_generation.py``.
"""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest

from distillm_edge.errors import UserError
from distillm_edge.eval.generation import GenItem, evaluate_generation, load_instructions, stop_ids


def test_loaders_accept_the_three_record_shapes(tmp_path):
    rows = [{"question": "What is gout?", "answer": "A form of arthritis."},
            {"instruction": "Answer truthfully", "input": "What is a stroke?", "output": "Brain ischemia."},
            {"instruction": "Define anemia.", "input": "", "output": "Low hemoglobin."}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    items, digest = load_instructions(tmp_path / "a.json")
    assert [i.prompt for i in items] == ["What is gout?", "Answer truthfully\n\nWhat is a stroke?", "Define anemia."]
    assert items[1].reference == "Brain ischemia." and len(digest) == 64
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows) + "\n")
    assert [i.id for i in load_instructions(tmp_path / "b.jsonl.gz", limit=2)[0]] == [
        f"{tmp_path / 'b.jsonl.gz'}:1", f"{tmp_path / 'b.jsonl.gz'}:2"]
    import datasets

    datasets.DatasetDict({"valid": datasets.Dataset.from_list(
        [{"instruction": "Define anemia.", "input": "", "response": "Low hemoglobin."}])}).save_to_disk(tmp_path / "ds")
    saved, digest = load_instructions(tmp_path / "ds")
    assert saved == [GenItem(f"{tmp_path / 'ds'}:valid:0", "Define anemia.", "Low hemoglobin.")] and len(digest) == 64


def test_loader_errors_name_file_and_line(tmp_path, shared_data):
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "a"}\n{"question": "q"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: expected fields question/answer"):
        load_instructions(tmp_path / "bad.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "a"}\n{oops\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        load_instructions(tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match="generation data not found"):
        load_instructions(tmp_path / "missing.jsonl")
    items, _ = load_instructions(shared_data / "medquad" / "medquad_sample4k.jsonl", limit=3)
    assert len(items) == 3 and items[0].prompt.startswith("What are the symptoms")


def test_generation_metrics_on_tiny_model(tiny_llama_dir):
    import torch

    from distillm_edge.backends.base import reference_continuation_logprobs
    from distillm_edge.backends.torch_backend import TorchBackend

    before = torch.get_num_threads()
    backend = TorchBackend(str(tiny_llama_dir), threads=1)
    try:
        items = [GenItem("1", "What is gout?", "A form of   arthritis. Common."), GenItem("2", "Define anemia.", "Low hemoglobin.")]
        out = evaluate_generation(backend, items, max_new_tokens=4, max_ref_words=3)
        m = out["metrics"]
        assert set(m) >= {"rouge1", "rouge2", "rougeL", "bleu1", "bleu4", "bits_per_byte", "word_perplexity",
                          "byte_perplexity", "token_perplexity", "next_token_accuracy"}
        assert m["n"] == 2 and 0 <= m["next_token_accuracy"] <= 100
        # references are cut by words (spacing kept), not by tokens
        assert [s["scored_reference"] for s in out["samples"]] == ["A form of", "Low hemoglobin."]
        assert all(s["generated_tokens"] <= 4 for s in out["samples"])
        lps = []
        for item, sample in zip(items, out["samples"]):
            prompt = backend.chat_ids([{"role": "user", "content": item.prompt}])
            ref = backend.tokenize(sample["scored_reference"], add_special_tokens=False)
            assert sample["reference_tokens"] == len(ref)
            lps.append(reference_continuation_logprobs(backend, [(prompt, ref)])[0][0])
        nll = -float(np.concatenate(lps).astype(np.float64).sum())
        n_bytes, n_words = len(b"A form of") + len(b"Low hemoglobin."), 5
        assert m["token_perplexity"] == pytest.approx(math.exp(-np.concatenate(lps).mean()), rel=1e-4)
        assert m["bits_per_byte"] == pytest.approx(nll / n_bytes / math.log(2), rel=1e-4)
        assert m["word_perplexity"] == pytest.approx(math.exp(nll / n_words), rel=1e-4)
        assert m["byte_perplexity"] == pytest.approx(math.exp(nll / n_bytes), rel=1e-4)
        assert backend.eos_token_ids <= stop_ids(backend)
    finally:
        torch.set_num_threads(before)
