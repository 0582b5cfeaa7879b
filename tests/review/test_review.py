"""Expert review: blinded sheet export on tiny models, verdict import with Wilson intervals, errors.

Two tiny random Llamas (different seeds, SmolLM2's tokenizer) answer a few medalpaca-style records;
the slow test runs the embedded SmolLM2 GGUF on real MedQuAD questions.

Run: ``pytest tests/review -q`` (``-m slow`` for the GGUF test).
"""

from __future__ import annotations

import csv
import json
import stat

import pytest
import typer
from typer.testing import CliRunner

from distillm_edge.cli import review as review_cli
from distillm_edge.errors import UserError
from distillm_edge.review import export as review_export
from distillm_edge.review import verdicts
from distillm_edge.review.config import VERDICTS, ReviewExportConfig, ReviewImportConfig, key_path_for

RECORDS = [
    {"instruction": "What is hypertension?", "input": "", "output": "Persistently raised blood pressure."},
    {"instruction": "Name a symptom of anaemia.", "input": "", "output": "Fatigue."},
    {"instruction": "What does insulin do?", "input": "", "output": "It lowers blood glucose."},
    {"instruction": "What is a fracture?", "input": "", "output": "A broken bone."},
    {"instruction": "What causes scurvy?", "input": "", "output": "Lack of vitamin C."},
    {"instruction": "Define tachycardia.", "input": "", "output": "A fast heart rate."},
]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("review_data") / "meadow.json"
    path.write_text(json.dumps(RECORDS))
    return path


@pytest.fixture(scope="module")
def second_tiny_dir(tmp_path_factory, smollm2_tokenizer):
    """Another tiny random Llama (seed 1) so the two models answer differently."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(smollm2_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=smollm2_tokenizer.bos_token_id,
                      eos_token_id=smollm2_tokenizer.eos_token_id)
    out = tmp_path_factory.mktemp("tiny_llama_b")
    LlamaForCausalLM(cfg).save_pretrained(out)
    smollm2_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_llama_dir, second_tiny_dir, data_file):
    out = tmp_path_factory.mktemp("review") / "sheet.csv"
    cfg = ReviewExportConfig(models=(str(tiny_llama_dir), str(second_tiny_dir)), data=str(data_file), n=4, seed=3,
                             out=str(out), max_new_tokens=6, threads=1)
    sheet, key = review_export.run(cfg)
    return cfg, sheet, key


def _rows(sheet):
    with open(sheet, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write(sheet, rows):
    with open(sheet, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# --- Wilson interval ------------------------------------------------------------------------------
@pytest.mark.parametrize("k, n", [(0, 10), (5, 10), (10, 10), (19, 89), (1, 1), (70, 89)])
def test_wilson_matches_scipy(k, n):
    stats = pytest.importorskip("scipy.stats")
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = verdicts.wilson(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)


def test_wilson_edges():
    assert verdicts.wilson(0, 0) == (0.0, 1.0)
    lo, hi = verdicts.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(3.8415 / 13.8415, abs=1e-4)  # z^2 / (n + z^2)
    with pytest.raises(ValueError):
        verdicts.wilson(11, 10)


def test_parse_verdict():
    assert verdicts.parse_verdict(" Yes ", "x") is True and verdicts.parse_verdict("0", "x") is False
    assert verdicts.parse_verdict("", "x") is None and verdicts.parse_verdict(None, "x") is None
    with pytest.raises(UserError, match="sheet.csv:4: column accurate: 'maybe' is not a verdict"):
        verdicts.parse_verdict("maybe", "sheet.csv:4: column accurate")


# --- export ---------------------------------------------------------------------------------------
def test_sheet_is_blinded_and_complete(exported):
    cfg, sheet, key_path = exported
    rows = _rows(sheet)
    assert list(rows[0]) == list(review_export.SHEET_COLUMNS)
    assert len(rows) == 8 and [r["label"] for r in rows] == ["A", "B"] * 4
    assert all(r[v] == "" for r in rows for v in VERDICTS)
    text = sheet.read_text()
    for spec in cfg.models:  # nothing on the sheet names a model
        assert spec not in text and spec.split("/")[-1] not in text
    questions = {r["instruction"]: r["output"] for r in RECORDS}
    assert all(questions[r["question"]] == r["reference"] for r in rows)
    assert len({r["question"] for r in rows}) == 4


def test_key_is_private_and_unblinds(exported):
    cfg, sheet, key_path = exported
    assert key_path == key_path_for(sheet)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = json.loads(key_path.read_text())
    assert [m["spec"] for m in key["models"]] == list(cfg.models)
    assert all(len(m["sha256"]) == 64 for m in key["models"]) and key["data_sha256"]
    orders = [tuple(it["labels"][lab]["model"] for lab in "AB") for it in key["items"]]
    assert set(orders) == {(0, 1), (1, 0)}  # labels are shuffled per question
    # The key's answer hashes point at each model's own answer.
    from distillm_edge.backends import open_backend
    from distillm_edge.backends.generate import GenerationSettings, generate_text

    backend = open_backend(cfg.models[1], "torch", threads=1)
    rows = {(int(r["item"]), r["label"]): r for r in _rows(sheet)}
    item = key["items"][0]
    label = next(lab for lab, v in item["labels"].items() if v["model"] == 1)
    ids = backend.chat_ids([{"role": "user", "content": rows[(1, label)]["question"]}])
    expected = generate_text(backend, ids, GenerationSettings(max_new_tokens=6, temperature=0.0, top_p=1.0)).text
    assert rows[(1, label)]["answer"] == expected.strip()


def test_export_is_reproducible(exported, tmp_path):
    cfg, sheet, _ = exported
    again = ReviewExportConfig(**{**cfg.__dict__, "out": str(tmp_path / "again.jsonl")})
    sheet2, _ = review_export.run(again)
    rows2 = [json.loads(line) for line in sheet2.read_text().splitlines()]
    assert [(str(r["item"]), r["label"], r["answer"]) for r in rows2] == \
        [(r["item"], r["label"], r["answer"]) for r in _rows(sheet)]


def test_export_config_errors(data_file, tiny_llama_dir, tmp_path):
    with pytest.raises(UserError, match=".csv or .jsonl"):
        ReviewExportConfig(models=("m",), data="d", out="sheet.xlsx")
    with pytest.raises(UserError, match="at least one --model"):
        ReviewExportConfig(models=(), data="d")
    with pytest.raises(UserError, match="--key must differ"):
        ReviewExportConfig(models=("m",), data="d", out=str(tmp_path / "s.csv"), key=str(tmp_path / "s.csv"))
    with pytest.raises(UserError, match="more than the 6 records"):
        review_export.run(ReviewExportConfig(models=(str(tiny_llama_dir),), data=str(data_file), n=7,
                                             out=str(tmp_path / "s.csv")))


# --- import ---------------------------------------------------------------------------------------
def _grade(sheet, key_path, tmp_path, name="graded.csv"):
    """Model 0: every answer accurate; model 1: one critical error, the rest not graded for it."""
    key = json.loads(key_path.read_text())
    model_of = {(it["item"], lab): v["model"] for it in key["items"] for lab, v in it["labels"].items()}
    rows = _rows(sheet)
    for r in rows:
        m = model_of[(int(r["item"]), r["label"])]
        r["accurate"] = "yes" if m == 0 else "no"
        r["omissions"] = "n"
        r["more_comprehensive"] = "1" if m == 0 and int(r["item"]) <= 2 else "0"
        if m == 1 and int(r["item"]) == 1:
            r["critical_error"] = "x"
    rows.reverse()  # graders may sort the sheet
    graded = tmp_path / name
    _write(graded, rows)
    return graded


def test_import_reports_rates_per_model(exported, tmp_path):
    cfg, sheet, key_path = exported
    graded = _grade(sheet, key_path, tmp_path)
    report = verdicts.run(ReviewImportConfig(sheet=str(graded), key=str(key_path), out=str(tmp_path / "r.json")))
    m0, m1 = report["models"]
    assert m0["spec"] == cfg.models[0] and m1["spec"] == cfg.models[1]
    assert m0["verdicts"]["accurate"] == {"yes": 4, "graded": 4, "rate": 1.0, "ci95": list(verdicts.wilson(4, 4))}
    assert m1["verdicts"]["accurate"]["yes"] == 0
    assert m0["verdicts"]["more_comprehensive"]["yes"] == 2
    assert m1["verdicts"]["critical_error"] == {"yes": 1, "graded": 1, "rate": 1.0,
                                                "ci95": list(verdicts.wilson(1, 1))}
    assert m0["verdicts"]["critical_error"]["graded"] == 0  # blank = not graded
    assert json.loads((tmp_path / "r.json").read_text())["models"][1]["graded_answers"] == 4


def test_import_refuses_edited_answer_wrong_key_and_bad_values(exported, tmp_path):
    cfg, sheet, key_path = exported
    rows = _rows(sheet)
    rows[2]["answer"] += " (edited)"
    bad = tmp_path / "edited.csv"
    _write(bad, rows)
    with pytest.raises(UserError, match=r"edited.csv:4: the answer of item 2 label A differs"):
        verdicts.run(ReviewImportConfig(sheet=str(bad), key=str(key_path)))
    rows = _rows(sheet)
    rows[0]["accurate"] = "probably"
    _write(bad, rows)
    with pytest.raises(UserError, match=r"edited.csv:2: column accurate: 'probably' is not a verdict"):
        verdicts.run(ReviewImportConfig(sheet=str(bad), key=str(key_path)))
    rows = _rows(sheet)
    rows[0]["label"] = "C"
    _write(bad, rows)
    with pytest.raises(UserError, match="label 'C' is not in the key"):
        verdicts.run(ReviewImportConfig(sheet=str(bad), key=str(key_path)))
    with pytest.raises(UserError, match="key file not found"):
        verdicts.run(ReviewImportConfig(sheet=str(bad)))


def test_cli_export_and_import(tiny_llama_dir, data_file, tmp_path):
    app = typer.Typer()
    review_cli.register(app)
    runner = CliRunner()
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, ["review", "export", "--model", str(tiny_llama_dir), "--data", str(data_file),
                                 "--n", "2", "--out", str(out), "--max-new-tokens", "3", "--threads", "1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and {r["label"] for r in rows} == {"A"}
    for r in rows:
        r["accurate"] = "yes"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["review", "import", str(out)])
    assert result.exit_code == 0, result.output
    assert "2/2" in result.output
    result = runner.invoke(app, ["review", "export", "--model", "x", "--data", str(data_file), "--out", "s.txt"])
    assert result.exit_code == 2 and ".csv or .jsonl" in " ".join(result.output.split())


@pytest.mark.slow
def test_embedded_gguf_on_medquad(shared_data, tmp_path):
    data = shared_data / "medquad" / "medquad_sample4k.jsonl"
    if not data.is_file():
        pytest.skip(f"{data} is absent")
    cfg = ReviewExportConfig(models=("smollm2-135m-instruct",), data=str(data), n=2, seed=0,
                             out=str(tmp_path / "s.csv"), max_new_tokens=12, threads=1)
    sheet, key_path = review_export.run(cfg)
    rows = _rows(sheet)
    assert len(rows) == 2 and all(r["answer"] for r in rows)
    key = json.loads(key_path.read_text())
    assert key["models"][0]["model_id"].startswith("gguf:") and len(key["models"][0]["sha256"]) == 64
    for r in rows:
        r["critical_error"] = "no"
    _write(sheet, rows)
    report = verdicts.run(ReviewImportConfig(sheet=str(sheet)))
    assert report["models"][0]["verdicts"]["critical_error"]["graded"] == 2
