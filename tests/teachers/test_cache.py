"""The offline teacher-logit cache end to end on tiny models: cache == online loss for a same-tokenizer and a
cross-tokenizer teacher (padded and packed batches, truncated students), resume, manifest and bad input.

Run: ``pytest tests/teachers/test_cache.py``.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch

from distillm_edge.errors import UserError
from distillm_edge.teachers.cache import CacheConfig, CachedTeacher, cached_kd_loss, run, shard_name
from distillm_edge.training.batches import collate, encode_records, ensure_chat_template
from distillm_edge.training.cross_tokenizer import cross_tokenizer_kd, shared_vocab
from distillm_edge.training.losses import kd_loss
from distillm_edge.training.packing import collate_packed
from distillm_edge.training.teachers import Teacher, teacher_forward


def corpus(n: int) -> list[dict]:
    from distillm_edge.data import builtin_corpus_path

    rows = [json.loads(x) for x in builtin_corpus_path().read_text(encoding="utf-8").splitlines() if x.strip()]
    random.Random(0).shuffle(rows)
    return [{"id": r["id"], "instruction": r["question"], "input": "", "response": r["answer"], "source": "builtin",
             "specialty": r["specialty"], "difficulty": r["difficulty"]} for r in rows[:n]]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    import datasets

    recs = corpus(12)
    out = tmp_path_factory.mktemp("cache_data")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(recs[:10]),
                          "valid": datasets.Dataset.from_list(recs[10:])}).save_to_disk(str(out))
    return out


@pytest.fixture(scope="module")
def peaked_teacher_dir(tmp_path_factory, tiny_llama_dir) -> Path:
    """The tiny Llama with its final norm scaled up: confident, like a trained teacher (top-64 holds most mass)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        model.model.norm.weight.mul_(40.0)
    out = tmp_path_factory.mktemp("peaked")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def cross_teacher_dir(tmp_path_factory) -> Path:
    """A tiny Llama with its own 1,024-token byte-level BPE: a teacher with another tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rows = corpus(200)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([r["instruction"] + "\n" + r["response"] for r in rows],
                            trainers.BpeTrainer(vocab_size=1024, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(2)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=1024, bos_token_id=fast.bos_token_id,
                      eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.model.norm.weight.mul_(8.0)
    out = tmp_path_factory.mktemp("cross_teacher")
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(path)
    ensure_chat_template(tok)
    return AutoModelForCausalLM.from_pretrained(path).eval(), tok


def build(teacher: Path, data: Path, out: Path, student: Path, **kw) -> dict:
    return run(CacheConfig(teacher=str(teacher), data=str(data), out=str(out), student=str(student), progress=False, **kw))


def flat_logits(model, batch) -> torch.Tensor:
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=batch.loss_mask).logits
    return out.reshape(1, -1, out.shape[-1]).detach()


def test_same_tokenizer_cache_matches_the_online_loss(tiny_llama_dir, peaked_teacher_dir, tiny_data, tmp_path):
    manifest = build(peaked_teacher_dir, tiny_data, tmp_path / "cache", tiny_llama_dir, top_k=64)
    assert manifest["complete"] and manifest["records"] == 10 and manifest["rows"] > 100
    assert manifest["settings"]["student_tokenizer"] is None  # same vocabulary: no shared-vocabulary tail
    mass = manifest["tail_mass"]
    assert list(mass) == ["1", "1.5", "2", "3", "4", "8"] and 0 <= mass["1"] < mass["8"] <= 1
    cache = CachedTeacher.open(tmp_path / "cache", data_dir=tiny_data, train_on_prompt=False)
    assert cache.vocab_map is None
    student, tok = load(tiny_llama_dir)
    teacher_model, _ = load(peaked_teacher_dir)
    teacher = Teacher(0, "t", str(peaked_teacher_dir), 1.0, tok, tok.pad_token_id, True, model=teacher_model)
    import datasets

    examples, _ = encode_records(list(datasets.load_from_disk(str(tiny_data))["train"]), tok, {}, 96)
    for group in (examples[:3], examples[3:7]):
        batch = collate(group, tok.pad_token_id, {})
        logits = flat_logits(student, batch)
        online_t = teacher_forward(teacher, batch, student_vocab=logits.shape[-1]).logits
        rows = cache.rows_for(group)
        assert rows.student_rows.tolist() == list(range(batch.tokens)) and rows.unmatched == 0
        for tau in (1.0, 2.0):
            online = float(kd_loss(logits, online_t, temperature=tau))
            cached = float(cached_kd_loss(logits, rows, temperature=tau))
            assert cached <= online + 1e-5
            assert cached == pytest.approx(online, rel=0.02), tau  # top-64 of a confident teacher: within 2 %
        pb = collate_packed(group, tok.pad_token_id, {})  # packed rows: the same rows in the same order
        packed_logits = student(**pb.model_inputs(), logits_to_keep=pb.batch.loss_mask).logits.reshape(1, -1, logits.shape[-1])
        assert float(cached_kd_loss(packed_logits.detach(), rows, temperature=1.0)) == pytest.approx(
            float(cached_kd_loss(logits, rows, temperature=1.0)), rel=1e-4)


@pytest.mark.parametrize("max_length", [160, 64])  # 64: students truncated, the teacher views cut to match
def test_cross_tokenizer_cache_matches_the_online_shared_vocabulary_loss(tiny_llama_dir, cross_teacher_dir, tiny_data,
                                                                         tmp_path, max_length):
    student, s_tok = load(tiny_llama_dir)
    t_model, t_tok = load(cross_teacher_dir)
    vmap = shared_vocab(s_tok, t_tok)
    teacher = Teacher(0, "x", str(cross_teacher_dir), 1.0, t_tok, t_tok.pad_token_id, False, vocab_map=vmap, model=t_model)
    import datasets

    records = list(datasets.load_from_disk(str(tiny_data))["train"])
    examples, _ = encode_records(records, s_tok, {0: t_tok}, max_length)
    assert len(examples) >= 6
    if max_length == 64:
        assert any(e.student.truncated for e in examples)
    full = build(cross_teacher_dir, tiny_data, tmp_path / "full", tiny_llama_dir, top_k=len(t_tok), max_length=4 * max_length)
    build(cross_teacher_dir, tiny_data, tmp_path / "top16", tiny_llama_dir, top_k=16, max_length=4 * max_length)
    assert full["settings"]["student_tokenizer"] is not None
    caches = {k: CachedTeacher.open(tmp_path / k, student_tokenizer=s_tok) for k in ("full", "top16")}
    assert torch.equal(caches["full"].vocab_map[1], vmap[1])
    for group in (examples[:3], examples[3:]):
        batch = collate(group, s_tok.pad_token_id, {0: t_tok.pad_token_id})
        view = batch.views[0]
        logits = flat_logits(student, batch)
        tl = teacher_forward(teacher, batch, student_vocab=logits.shape[-1]).logits
        rows = caches["full"].rows_for(group)
        assert rows.student_rows.tolist() == view.student_rows.tolist()  # the same aligned pairs as the trainer's
        assert rows.unmatched == batch.tokens - view.student_rows.numel()
        for tau in (1.0, 3.0):
            online = float(cross_tokenizer_kd(logits, tl, view.student_rows.view(1, -1), view.teacher_rows.view(1, -1),
                                              vocab_map=vmap, uld_weight=0.0, temperature=tau))
            got = float(cached_kd_loss(logits, rows, temperature=tau, vocab_map=caches["full"].vocab_map))
            assert got == pytest.approx(online, rel=2e-3), tau  # every entry cached: fp16 rounding only
            top16 = float(cached_kd_loss(logits, caches["top16"].rows_for(group), temperature=tau,
                                         vocab_map=caches["top16"].vocab_map))
            assert top16 <= online + 1e-5


def test_resume_skips_finished_shards_and_the_manifest_guards_its_settings(tiny_llama_dir, tiny_data, tmp_path):
    out = tmp_path / "cache"
    first = build(tiny_llama_dir, tiny_data, out, tiny_llama_dir, top_k=8, shard_size=4)
    assert first["shards"] == 3 and first["computed_shards"] == 3 and first["bytes_per_row"] > 0
    assert first["raw_bytes_per_row"] > first["bytes_per_row"]  # zstd saved something
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] + [shard_name(i) for i in range(3)]
    kept = {i: (out / shard_name(i)).stat().st_mtime_ns for i in (0, 2)}
    (out / shard_name(1)).unlink()
    again = build(tiny_llama_dir, tiny_data, out, tiny_llama_dir, top_k=8, shard_size=4)
    assert (again["computed_shards"], again["skipped_shards"]) == (1, 2)
    assert {i: (out / shard_name(i)).stat().st_mtime_ns for i in (0, 2)} == kept
    assert again["rows"] == first["rows"] and again["raw_bytes"] == first["raw_bytes"]  # the same shard again
    assert again["bytes"] == pytest.approx(first["bytes"], rel=0.01)  # (safetensors' header key order varies)
    with pytest.raises(UserError, match="top_k differ"):
        build(tiny_llama_dir, tiny_data, out, tiny_llama_dir, top_k=4, shard_size=4)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(dict(manifest, complete=False)))
    with pytest.raises(UserError, match="incomplete"):
        CachedTeacher.open(out)
    (out / "manifest.json").write_text(json.dumps(manifest))
    other = tmp_path / "other_data"
    import datasets

    datasets.load_from_disk(str(tiny_data)).save_to_disk(str(other))
    ds = datasets.load_from_disk(str(tiny_data))
    datasets.DatasetDict({"train": ds["train"].select(range(9)), "valid": ds["valid"]}).save_to_disk(str(tmp_path / "d9"))
    with pytest.raises(UserError, match="another dataset"):
        CachedTeacher.open(out, data_dir=tmp_path / "d9")
    cache = CachedTeacher.open(out, data_dir=tiny_data)
    with pytest.raises(UserError, match="not in the cache"):
        cache.encoding("no-such-record")
    with pytest.raises(UserError, match="not empty"):
        build(tiny_llama_dir, tiny_data, tiny_data, tiny_llama_dir)
    with pytest.raises(UserError, match="--top-k"):
        dataclasses.replace(CacheConfig("a", "b", "c"), top_k=0)


def test_cli_builds_a_cache_and_names_bad_options(tiny_llama_dir, tiny_data, tmp_path):
    from typer.testing import CliRunner

    from distillm_edge.cli import app

    out = tmp_path / "cli_cache"
    args = ["teachers", "cache", "--teacher", str(tiny_llama_dir), "--data", str(tiny_data), "--out", str(out), "--top-k", "4",
            "--student", "none", "--max-examples", "3", "--no-progress", "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "3 records" in result.output and "bytes/row" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["settings"]["top_k"] == 4 and manifest["records"] == 3
    bad = CliRunner().invoke(app, args[:-2] + ["--temperatures", "1,x"])
    assert bad.exit_code == 2 and "--temperatures 1,x" in bad.output


@pytest.mark.slow
def test_real_teachers_cache_rows_match_the_trainer_and_stay_close_at_tau_1(tmp_path, smollm2_dir, gemma_dir):
    """SmolLM2 (same tokenizer) and Gemma-3 (another tokenizer) cached over 2 built-in records, top-64."""
    from distillm_edge.teachers.cache import resolve_data
    from distillm_edge.training.teachers import pad_id

    data = resolve_data("builtin")
    student, s_tok = load(smollm2_dir)
    import datasets

    records = list(datasets.load_from_disk(str(data))["train"])[:2]
    for spec, same in (("smollm2-135m-instruct", True), ("gemma-3-270m", False)):
        m = run(CacheConfig(teacher=spec, data=str(data), out=str(tmp_path / spec), max_examples=2, progress=False))
        assert m["records"] == 2 and m["bytes_per_row"] < m["raw_bytes_per_row"]
        cache = CachedTeacher.open(tmp_path / spec, data_dir=data, student_tokenizer=s_tok)
        t_model, t_tok = (student, s_tok) if same else load(gemma_dir)
        teacher = Teacher(0, spec, spec, 1.0, t_tok, pad_id(t_tok), same, vocab_map=cache.vocab_map, model=t_model)
        examples, _ = encode_records(records, s_tok, {} if same else {0: t_tok}, 256)
        batch = collate(examples, pad_id(s_tok), {} if same else {0: pad_id(t_tok)})
        logits = flat_logits(student, batch) * 0.5  # a flatter "student" than the teacher itself
        tl = teacher_forward(teacher, batch, student_vocab=logits.shape[-1]).logits
        rows = cache.rows_for(examples)
        if same:
            online = float(kd_loss(logits, tl))
        else:
            view = batch.views[0]
            assert rows.student_rows.tolist() == view.student_rows.tolist()
            online = float(cross_tokenizer_kd(logits, tl, view.student_rows.view(1, -1), view.teacher_rows.view(1, -1),
                                              vocab_map=cache.vocab_map, uld_weight=0.0))
        cached = float(cached_kd_loss(logits, rows, vocab_map=cache.vocab_map))
        print(f"{spec}: online {online:.4f} cached {cached:.4f} ({cached / online:.3f}); tail mass {m['tail_mass']}")
        assert 0.7 * online < cached <= online + 1e-4
