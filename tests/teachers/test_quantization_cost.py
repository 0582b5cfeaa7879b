"""``distillm-edge teachers quantization-cost``: the row statistics against naive references, the run
end to end on a tiny random Llama in NF4 / int8 / bf16 on the CPU (bitsandbytes' CPU backend), an
unavailable mode reported with its reason, and bad options.

Run: ``pytest tests/teachers/test_quantization_cost.py``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distillm_edge.config import ConfigError
from distillm_edge.errors import UserError
from distillm_edge.teachers import quantization_cost as qc


@pytest.fixture(scope="module")
def valid_data(tmp_path_factory) -> Path:
    import datasets

    from distillm_edge.data import builtin_corpus_path

    rows = [json.loads(x) for x in builtin_corpus_path().read_text(encoding="utf-8").splitlines() if x.strip()]
    random.Random(1).shuffle(rows)
    recs = [{"id": r["id"], "instruction": r["question"], "input": "", "response": r["answer"], "source": "builtin",
             "specialty": r["specialty"], "difficulty": r["difficulty"]} for r in rows[:6]]
    out = tmp_path_factory.mktemp("qcost_data")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(recs[:2]),
                          "valid": datasets.Dataset.from_list(recs[2:])}).save_to_disk(str(out))
    return out


def test_compare_rows_matches_naive_kl_agreement_and_nll():
    torch.manual_seed(0)
    full, quant = torch.randn(1, 7, 50) * 3, torch.randn(1, 7, 50) * 3
    quant[0, :3] = full[0, :3] + 0.01  # first rows nearly identical: agree
    targets = torch.randint(0, 50, (7,))
    stats = qc.compare_rows(full, quant, targets)
    p_log, q_log = F.log_softmax(full[0], -1), F.log_softmax(quant[0], -1)
    naive_kl = (p_log.exp() * (p_log - q_log)).sum(-1)
    assert stats.rows == 7
    assert stats.kl == pytest.approx(float(naive_kl.sum()), rel=1e-5)
    assert stats.max_kl == pytest.approx(float(naive_kl.max()), rel=1e-5)
    assert stats.agree == int((full[0].argmax(-1) == quant[0].argmax(-1)).sum()) and stats.agree >= 3
    assert stats.nll_full == pytest.approx(float(F.cross_entropy(full[0], targets, reduction="sum")), rel=1e-5)
    assert stats.nll_quant == pytest.approx(float(F.cross_entropy(quant[0], targets, reduction="sum")), rel=1e-5)
    same = qc.compare_rows(full, full.clone(), targets)
    assert same.kl == pytest.approx(0.0, abs=1e-5) and same.agree == 7
    empty = qc.compare_rows(full[:, :0], quant[:, :0], targets[:0])
    assert empty.rows == 0 and empty.kl == 0.0


def test_quantization_cost_on_a_tiny_llama_nf4_int8_bf16(tiny_llama_dir, valid_data, tmp_path):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "report.json"
    report = qc.run(qc.QuantizationCostConfig(teacher=str(tiny_llama_dir), data=str(valid_data), quant=("nf4", "int8", "bf16"),
                                              max_examples=4, max_length=64, out=str(out)))
    assert json.loads(out.read_text()) == report
    modes = report["modes"]
    for mode in ("nf4", "int8", "bf16"):
        m = modes[mode]
        assert m["available"], m
        assert m["tokens"] > 0 and m["examples"] == 4
        assert m["mean_kl"] > -1e-6 and 0 <= m["top1_agreement"] <= 1 and m["max_kl"] >= m["mean_kl"]  # KL >= 0 up to rounding
    # 4-bit moves the distribution more than 8-bit, and 8-bit more than bf16 weights alone
    assert modes["nf4"]["mean_kl"] > modes["int8"]["mean_kl"] > 0
    assert modes["nf4"]["mean_kl"] > modes["bf16"]["mean_kl"]


def test_an_unavailable_mode_is_reported_and_the_others_still_run(tiny_llama_dir, valid_data, monkeypatch):
    import distillm_edge.models as models

    real = models.load_model

    def fake(spec, options=None, progress=True):
        if options is not None and options.quantization == "int8":
            raise RuntimeError("no int8 kernel for this device")
        return real(spec, options, progress=progress)

    monkeypatch.setattr(models, "load_model", fake)
    report = qc.run(qc.QuantizationCostConfig(teacher=str(tiny_llama_dir), data=str(valid_data), quant=("int8", "bf16"),
                                              max_examples=2, max_length=64))
    assert report["modes"]["int8"] == {"available": False, "reason": "RuntimeError: no int8 kernel for this device"}
    assert report["modes"]["bf16"]["available"]
    with pytest.raises(UserError, match="no quantization mode could run"):
        qc.run(qc.QuantizationCostConfig(teacher=str(tiny_llama_dir), data=str(valid_data), quant=("int8",),
                                         max_examples=1, max_length=64))


def test_bad_options_name_the_option(valid_data, tiny_llama_dir):
    with pytest.raises(ConfigError, match="--quant nf3"):
        qc.QuantizationCostConfig(teacher="x", quant=("nf3",))
    with pytest.raises(ConfigError, match="repeated"):
        qc.QuantizationCostConfig(teacher="x", quant=("nf4", "nf4"))
    with pytest.raises(UserError, match="no 'test' split"):
        qc.run(qc.QuantizationCostConfig(teacher=str(tiny_llama_dir), data=str(valid_data), split="test", quant=("bf16",)))


def test_cli_parses_and_reports_bad_input(tiny_llama_dir, valid_data):
    from typer.testing import CliRunner

    from distillm_edge.cli import app

    result = CliRunner().invoke(app, ["teachers", "quantization-cost", "--teacher", str(tiny_llama_dir), "--data",
                                      str(valid_data), "--quant", "nf4,fp8"])
    assert result.exit_code == 2 and "--quant nf4,fp8" in result.output
    result = CliRunner().invoke(app, ["teachers", "quantization-cost", "--teacher", str(tiny_llama_dir), "--data",
                                      str(valid_data), "--quant", "bf16", "--max-examples", "1", "--max-length", "64"])
    assert result.exit_code == 0, result.output
    assert "bf16" in result.output and "top-1" in result.output


@pytest.mark.slow
def test_embedded_smollm2_nf4_on_the_default_held_out_split():
    pytest.importorskip("bitsandbytes")
    report = qc.run(qc.QuantizationCostConfig(teacher="smollm2-135m-instruct", data="builtin", quant=("nf4",),
                                              max_examples=3, max_length=128))
    m = report["modes"]["nf4"]
    assert m["available"] and m["tokens"] > 50
    assert 0 < m["mean_kl"] < 1.0 and m["top1_agreement"] > 0.6
