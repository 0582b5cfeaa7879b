"""What a teacher loses in NF4 / int8: mean KL(full || quantized) and top-1 agreement on held-out data.

    distillm-edge teachers quantization-cost --teacher smollm2-135m-instruct --data builtin
    distillm-edge teachers quantization-cost --teacher gemma-3-270m --data runs/medalpaca --quant nf4,int8,bf16

The research distils from teachers loaded in NF4; nobody reports how far that teacher is from the
full-precision one, yet it bounds what the student can learn. For each requested mode the teacher
is loaded once more (bitsandbytes NF4 with double quantization and bf16 compute, as
``models.load_model`` loads research teachers; LLM.int8; or plain ``bf16`` weights as a
reference for the compute dtype alone) and run next to the full-precision model (``dtype``,
fp32 by default) over the held-out split, one example at a time. At every response token (the
rows the trainer distils on, prompt masked) it records KL(p_full || p_quant) in nats (the forward
KL the trainer's KD loss uses, ``losses.kd_loss`` at temperature 1), whether the argmaxes agree,
and each model's own NLL of the true next token.

``--data`` is a prepared dataset (``distillm-edge data prepare --out DIR``; its ``valid`` split by
default) or ``builtin`` (the default train run's held-out split). Only the full model and one
quantized copy are in memory at a time. A mode bitsandbytes cannot run here (e.g. no CPU kernel in
the installed version) is reported as unavailable with the library's reason; the others still run.

Test: ``pytest tests/teachers/test_quantization_cost.py``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch

from distillm_edge.config import ConfigError

MODES = ("nf4", "int8", "bf16")


@dataclass(frozen=True)
class QuantizationCostConfig:
    """``distillm-edge teachers quantization-cost``."""

    teacher: str
    data: str = "builtin"  # a prepared dataset directory, or builtin (the default run's held-out split)
    split: str = "valid"
    quant: tuple[str, ...] = ("nf4", "int8")
    dtype: str = "float32"  # the full-precision reference
    max_examples: int = 64
    max_length: int = 256
    device: str = "cpu"
    threads: int = 0
    out: str | None = None  # also write the report as JSON here

    def __post_init__(self) -> None:
        if not self.teacher:
            raise ConfigError("--teacher: give a model spec (embedded name, checkpoint directory, .gguf or Hub id).")
        bad = [q for q in self.quant if q not in MODES]
        if bad or not self.quant:
            raise ConfigError(f"--quant {','.join(self.quant)}: use a comma-separated subset of {', '.join(MODES)}.")
        if len(set(self.quant)) != len(self.quant):
            raise ConfigError(f"--quant {','.join(self.quant)}: a mode is repeated.")
        if self.max_examples < 1:
            raise ConfigError(f"--max-examples {self.max_examples}: must be >= 1.")
        if self.max_length < 16:
            raise ConfigError(f"--max-length {self.max_length}: use at least 16 tokens.")


@dataclass
class Tally:
    """Sums over compared rows; the means are the report."""

    rows: int = 0
    kl: float = 0.0
    agree: int = 0
    nll_full: float = 0.0
    nll_quant: float = 0.0
    max_kl: float = 0.0
    seconds: float = 0.0
    unavailable: str | None = None
    examples: int = 0
    extra: dict = field(default_factory=dict)

    def add(self, other: RowStats) -> None:
        self.rows += other.rows
        self.kl += other.kl
        self.agree += other.agree
        self.nll_full += other.nll_full
        self.nll_quant += other.nll_quant
        self.max_kl = max(self.max_kl, other.max_kl)
        self.examples += 1

    def summary(self) -> dict:
        if self.unavailable is not None:
            return {"available": False, "reason": self.unavailable}
        n = max(self.rows, 1)
        return {"available": True, "examples": self.examples, "tokens": self.rows, "mean_kl": self.kl / n,
                "max_kl": self.max_kl, "top1_agreement": self.agree / n, "ppl_full": math.exp(self.nll_full / n),
                "ppl_quant": math.exp(self.nll_quant / n), "seconds": self.seconds}


@dataclass(frozen=True)
class RowStats:
    rows: int
    kl: float
    agree: int
    nll_full: float
    nll_quant: float
    max_kl: float


@torch.no_grad()
def compare_rows(full: torch.Tensor, quant: torch.Tensor, targets: torch.Tensor) -> RowStats:
    """Sums over the rows of ``full``/``quant`` logits [1, N, V] (same vocabulary): KL(full || quant)
    in nats, top-1 agreements and each model's NLL of ``targets`` [N]."""
    from distillm_edge.training.losses import cross_entropy_loss, kd_loss, tempered_log_softmax

    n = full.shape[1]
    if n == 0:
        return RowStats(0, 0.0, 0, 0.0, 0.0, 0.0)
    full, quant = full.float(), quant.float()
    kl = float(kd_loss(quant, full, normalizer=1.0))
    lp = tempered_log_softmax(full[0].clone())
    per_row = (lp.exp() * (lp - tempered_log_softmax(quant[0].clone()))).sum(-1)
    agree = int((full.argmax(-1) == quant.argmax(-1)).sum())
    t = targets.view(1, -1).to(full.device)
    return RowStats(n, kl, agree, float(cross_entropy_loss(full, t, normalizer=1.0)),
                    float(cross_entropy_loss(quant, t, normalizer=1.0)), float(per_row.max()))


def held_out_records(cfg: QuantizationCostConfig) -> tuple[list[dict], str]:
    """The records of ``cfg.split`` of ``cfg.data`` (``builtin``: the default train run's held-out split)."""
    from pathlib import Path

    from distillm_edge.data import load_prepared
    from distillm_edge.errors import UserError

    if cfg.data == "builtin":
        from distillm_edge.models import load_tokenizer
        from distillm_edge.training.config import TrainConfig
        from distillm_edge.training.trainer import prepared_data

        default = TrainConfig()
        path = prepared_data(default, load_tokenizer(default.student.model, progress=False))
    else:
        path = Path(cfg.data).expanduser()
    dataset = load_prepared(path)
    if cfg.split not in dataset:
        raise UserError(f"--data {path}: no '{cfg.split}' split (it has {', '.join(dataset)}); pass --split.")
    return list(dataset[cfg.split])[: cfg.max_examples], str(path)


def run(cfg: QuantizationCostConfig) -> dict:
    """Compare the teacher at full precision with each mode of ``cfg.quant``; print and return the report."""
    from rich.console import Console

    from distillm_edge.errors import UserError
    from distillm_edge.io import atomic_write_json
    from distillm_edge.models import LoadOptions, load_model
    from distillm_edge.training.batches import collate, encode_records, ensure_chat_template
    from distillm_edge.training.teachers import pad_id

    console = Console(stderr=True, soft_wrap=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line per 8 examples instead
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # else one "inputs will be cast" line per int8 matmul
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    full, tokenizer = load_model(cfg.teacher, LoadOptions(dtype=cfg.dtype, device=cfg.device), progress=False)
    ensure_chat_template(tokenizer)
    records, where = held_out_records(cfg)
    examples, dropped = encode_records(records, tokenizer, {}, cfg.max_length)
    if not examples:
        raise UserError(f"--data {where}: no {cfg.split} example has a response token within --max-length {cfg.max_length}.")
    console.print(f"{cfg.teacher}: {len(examples)} {cfg.split} examples from {where} "
                  f"({sum(sum(e.student.counted[1:]) for e in examples)} response tokens, {dropped} dropped)")
    pad = pad_id(tokenizer)
    report = {"teacher": cfg.teacher, "data": where, "split": cfg.split, "reference_dtype": cfg.dtype,
              "device": cfg.device, "modes": {}}
    for mode in cfg.quant:
        tally = Tally()
        started = time.perf_counter()
        try:
            options = (LoadOptions(dtype="bfloat16", device=cfg.device) if mode == "bf16" else
                       LoadOptions(dtype=cfg.dtype, device=cfg.device, quantization=mode))
            quant, _ = load_model(cfg.teacher, options, progress=False)
            for i, e in enumerate(examples):
                if i % 8 == 0:
                    console.print(f"  {mode}: example {i + 1}/{len(examples)}, {time.perf_counter() - started:.0f} s")
                batch = collate([e], pad, {})
                rows = {}
                for name, model in (("full", full), ("quant", quant)):
                    dev = model.get_input_embeddings().weight.device
                    out = model(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev),
                                logits_to_keep=batch.loss_mask.to(dev))
                    rows[name] = out.logits.reshape(1, -1, out.logits.shape[-1]).to(cfg.device)
                tally.add(compare_rows(rows["full"], rows["quant"], batch.targets))
            del quant
        except (ImportError, RuntimeError, NotImplementedError) as exc:  # bitsandbytes has no kernel here
            tally.unavailable = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        tally.seconds = time.perf_counter() - started
        report["modes"][mode] = tally.summary()
    console.print(format_report(report))
    if all(not m["available"] for m in report["modes"].values()):
        raise UserError(f"no quantization mode could run on {cfg.device}: "
                        + "; ".join(f"{k}: {m['reason']}" for k, m in report["modes"].items()))
    if cfg.out:
        atomic_write_json(cfg.out, report)
    return report


def format_report(report: dict) -> str:
    lines = [f"{'mode':<6} {'mean KL nats/tok':>17} {'max KL':>8} {'top-1 agree':>12} {'ppl full':>9} {'ppl quant':>10} "
             f"{'tokens':>7} {'s':>6}"]
    for mode, m in report["modes"].items():
        if not m["available"]:
            lines.append(f"{mode:<6} unavailable here: {m['reason']}")
            continue
        lines.append(f"{mode:<6} {m['mean_kl']:>17.5f} {m['max_kl']:>8.3f} {m['top1_agreement']:>12.2%} "
                     f"{m['ppl_full']:>9.2f} {m['ppl_quant']:>10.2f} {m['tokens']:>7} {m['seconds']:>6.0f}")
    return "\n".join(lines)
