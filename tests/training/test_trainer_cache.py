"""``train`` with cached teachers (``teachers[i].cache``) on tiny random models: the cached loss against the online
one through the real trainer step, a full run that loads no teacher weights, and bad caches refused at setup.

Tolerance (documented in ``teachers/cache.py``): a cache whose top-k covers the teacher's whole vocabulary gives
the online KD loss and gradient up to the fp16 rounding of the cached log-probs (rel 2e-3 here); a smaller k gives
the KL between the top-k + one-tail-bucket coarsenings, never above the online KL.

Run: ``pytest tests/training/test_trainer_cache.py`` (~1 min).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from tinyrun import tiny_config, train_rows

from distillm_edge.config import ConfigError
from distillm_edge.teachers.cache import CacheConfig
from distillm_edge.teachers.cache import run as build_cache
from distillm_edge.training import step, trainer
from distillm_edge.training.teachers import pad_id


@pytest.fixture(scope="module")
def peaked_dir(tmp_path_factory, tiny_cross_dir):
    """``tiny_cross_dir`` with its final norm scaled up: a confident teacher, far from a student cut from the original."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_cross_dir)
    with torch.no_grad():
        model.model.norm.weight.mul_(8.0)
    out = tmp_path_factory.mktemp("peaked_cross")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_cross_dir).save_pretrained(out)
    return out


def cache_of(teacher, student, data, out, **kw):
    kw = {"top_k": 1024, "split": "train,valid", "max_length": 384} | kw
    build_cache(CacheConfig(teacher=str(teacher), data=str(data), out=str(out), student=str(student), progress=False,
                            threads=1, **kw))
    return str(out)


def first_step(cfg, tau):
    """The trainer's first optimizer step on ``cfg``: its loss parts and the student's gradients (no update)."""
    r = trainer.setup(cfg)
    try:
        pads = {t.index: t.pad_id for t in r.teachers if not t.same_tokenizer}
        batches = step.step_batches(r, 0, 1, 0, pads, pad_id(r.tokenizer))
        counts = step.step_counts(r, batches)
        sums = {}
        for batch in batches:
            parts = step.compute_loss(r, batch, tau, counts)
            parts["loss"].backward()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        grads = [p.grad.detach().clone() for p in r.student.parameters() if p.grad is not None]
        return sums, grads, r
    finally:
        r.log.close()


@pytest.mark.parametrize("packing", [False, True])  # padded micro-batches of 2, or packed rows
@pytest.mark.parametrize("pair", ["same", "cross"])
def test_cached_teacher_step_matches_the_online_step(pair, packing, tiny_llama_dir, tiny_cross_dir, peaked_dir, tiny_data,
                                                     tmp_path):
    # same: a 1,024-token teacher and a student with its tokenizer; cross: that teacher for a SmolLM2-tokenizer student.
    # Either way top-k = 1,024 covers the teacher's whole vocabulary: cached == online up to fp16 log-probs.
    student = tiny_cross_dir if pair == "same" else tiny_llama_dir
    full = cache_of(peaked_dir, student, tiny_data, tmp_path / "full")
    top16 = cache_of(peaked_dir, student, tiny_data, tmp_path / "top16", top_k=16)
    base = {"teachers": [{"model": str(peaked_dir), "weight": 1.0}], "grad_accum": 3, "batch_size": 1 if packing else 2, "packing": packing,
            "kd_weight": 0.7, "cross_tokenizer": {"min_shared": 500}}  # (the tiny BPE shares 961 tokens)
    for tau in (1.0, 3.0):
        online, g_online, r = first_step(tiny_config(student, tiny_data, tmp_path / f"on{tau}", **base), tau)
        assert r.teachers[0].same_tokenizer == (pair == "same")
        cfg = tiny_config(student, tiny_data, tmp_path / f"ca{tau}", **base | {
            "teachers": [{"model": str(peaked_dir), "weight": 1.0, "cache": full}]})
        cached, g_cached, r = first_step(cfg, tau)
        assert r.teachers[0].model is None and r.teachers[0].cache is not None
        assert cached["kd"] == pytest.approx(online["kd"], rel=2e-3), tau
        assert cached["ce"] == pytest.approx(online["ce"], rel=1e-6)  # the same batches and student
        for a, b in zip(g_cached, g_online, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=2e-2)
        cfg16 = tiny_config(student, tiny_data, tmp_path / f"k16{tau}", **base | {
            "teachers": [{"model": str(peaked_dir), "weight": 1.0, "cache": top16}]})
        coarse, _, _ = first_step(cfg16, tau)
        assert 0 < coarse["kd"] <= online["kd"] + 1e-6  # the top-16 + tail bucket KL: a lower bound of the online KL


def test_run_with_cached_teachers_trains_scores_from_the_cache_and_loads_no_teacher_weights(
        tiny_llama_dir, tiny_wide_dir, tiny_cross_dir, tiny_data, tmp_path, monkeypatch):
    import distillm_edge.models as models

    caches = {"wide": cache_of(tiny_wide_dir, tiny_llama_dir, tiny_data, tmp_path / "c-wide", top_k=64),
              "cross": cache_of(tiny_cross_dir, tiny_llama_dir, tiny_data, tmp_path / "c-cross", top_k=64)}
    loaded, real_load = [], models.load_model
    monkeypatch.setattr(models, "load_model", lambda spec, *a, **k: loaded.append(str(spec)) or real_load(spec, *a, **k))
    cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / "run", max_steps=8, eval_examples=4, save_every=0,
                      teachers=[{"model": str(tiny_wide_dir), "weight": 0.6, "cache": caches["wide"]},
                                {"model": str(tiny_cross_dir), "weight": 0.4, "cache": caches["cross"]}],
                      temperature={"schedule": "progressive", "initial": 4.0, "floor": 1.0},
                      cross_tokenizer={"min_shared": 500})
    run_dir = trainer.run(cfg)
    assert loaded == [str(tiny_llama_dir)]  # the student's source only: neither teacher's weights
    rows = train_rows(run_dir)
    assert len(rows) == 8 and {f"loss/kd/{tiny_wide_dir.name}", f"loss/kd/{tiny_cross_dir.name}"} <= set(rows[0])
    first, last = rows[0]["loss"], sum(r["loss"] for r in rows[-2:]) / 2
    assert last < first - 0.2, (first, last)
    ev = json.loads((run_dir / "summary.json").read_text())["evaluation"]
    assert ev["student_perplexity"]["after"] < ev["student_perplexity"]["before"]
    for name in (tiny_wide_dir.name, tiny_cross_dir.name):  # scored from the caches (held-out split cached)
        t = ev["teachers"][name]
        assert math.isfinite(t["perplexity"]) and t["perplexity"] > 1 and t["kl_after"] >= 0 and t["kl_before"] >= 0
    assert 0.5 < ev["teachers"][tiny_cross_dir.name]["alignment"]["aligned_share"] <= 1


@pytest.mark.parametrize("pair", ["same", "cross"])
def test_cached_teacher_held_out_scores_match_the_online_ones(pair, tiny_llama_dir, tiny_wide_dir, peaked_dir, tiny_data,
                                                               tmp_path):
    from distillm_edge.training.report import evaluate

    teacher = tiny_wide_dir if pair == "same" else peaked_dir
    extra = {"eval_examples": 4, "cross_tokenizer": {"min_shared": 500}}
    scores = {}
    for k in (8, 1024):
        cache = cache_of(teacher, tiny_llama_dir, tiny_data, tmp_path / f"c{k}", top_k=k)
        runs = {"online": tiny_config(tiny_llama_dir, tiny_data, tmp_path / f"on{k}", teachers=[{"model": str(teacher)}],
                                      **extra),
                "cached": tiny_config(tiny_llama_dir, tiny_data, tmp_path / f"ca{k}",
                                      teachers=[{"model": str(teacher), "cache": cache}], **extra)}
        for name, cfg in runs.items():
            r = trainer.setup(cfg)
            r.log.close()
            student = r.accelerator.unwrap_model(r.student).eval()
            scores[name, k] = evaluate({"s": student}, r.teachers, r.valid_examples, pad_id(r.tokenizer))
    t = teacher.name
    online = scores["online", 8]
    for k in (8, 1024):
        cached = scores["cached", k]
        assert cached[t].perplexity == pytest.approx(online[t].perplexity, rel=1e-4)  # exact: cached target log-probs
        assert cached["s"].kl_rows[t] == online["s"].kl_rows[t]  # the same rows
        assert 0 < cached["s"].mean_kl(t) <= online["s"].mean_kl(t) + 1e-6  # top-k + tail KL: a lower bound
        if pair == "cross":
            assert cached[t].aligned == online[t].aligned
            assert cached[t].mass == pytest.approx(online[t].mass, rel=1e-3)  # shared-vocabulary mass, from the cache
    full = scores["cached", 1024]["s"].mean_kl(t)
    if pair == "cross":  # 1,024 entries cover the cross teacher's vocabulary: the full KL up to fp16 rounding
        assert full == pytest.approx(online["s"].mean_kl(t), rel=2e-3)


def test_bad_caches_are_refused_at_setup_naming_the_option(tiny_llama_dir, tiny_wide_dir, tiny_data, tmp_path,
                                                            monkeypatch):
    import datasets

    import distillm_edge.models as models

    good = cache_of(tiny_wide_dir, tiny_llama_dir, tiny_data, tmp_path / "good", top_k=8, temperatures=(1.0, 2.0))

    def setup(out, cache, **kw):
        cfg = tiny_config(tiny_llama_dir, tiny_data, tmp_path / out, teachers=[{"model": str(tiny_wide_dir),
                                                                                "cache": str(cache)}], **kw)
        return trainer.setup(cfg)

    def no_weights(*a, **k):
        raise AssertionError("weights loaded before the cache was checked")

    monkeypatch.setattr(models, "load_model", no_weights)
    with pytest.raises(ConfigError, match=r"teachers\[0\].cache .*temperature schedule \(progressive, 8 -> 1\) leaves "
                                          r"the cached grid 1..2.*--temperatures covering 1..8"):
        setup("t", good)
    with pytest.raises(ConfigError, match=r"attention alignment .*remove teachers\[0\].cache"):
        setup("a", good, temperature={"schedule": "constant", "initial": 2.0}, attention={"weight": 0.1, "layers": [0]})
    manifest = json.loads((tmp_path / "good" / "manifest.json").read_text())
    (tmp_path / "good" / "manifest.json").write_text(json.dumps(manifest | {"complete": False}))
    with pytest.raises(ConfigError, match=r"teachers\[0\].cache: .*incomplete"):
        setup("i", good, temperature={"schedule": "constant", "initial": 2.0})
    (tmp_path / "good" / "manifest.json").write_text(json.dumps(manifest))
    ds = datasets.load_from_disk(str(tiny_data))
    other = tmp_path / "other_data"
    datasets.DatasetDict({"train": ds["train"].select(range(20)), "valid": ds["valid"]}).save_to_disk(str(other))
    with pytest.raises(ConfigError, match=r"teachers\[0\].cache: .*another dataset"):
        setup("d", good, data=str(other), temperature={"schedule": "constant", "initial": 2.0})
    monkeypatch.undo()
    few = cache_of(tiny_wide_dir, tiny_llama_dir, tiny_data, tmp_path / "few", top_k=8, max_examples=3)
    with pytest.raises(ConfigError, match=r"records this run uses are not cached"):
        setup("c", few, temperature={"schedule": "constant", "initial": 2.0})
    with pytest.raises(ConfigError, match=r"built for teacher .*not teachers\[0\].model"):
        trainer.setup(tiny_config(tiny_llama_dir, tiny_data, tmp_path / "w", temperature={"schedule": "constant",
                                                                                          "initial": 2.0},
                                  teachers=[{"model": str(tiny_llama_dir), "cache": good}]))
