"""Held-out evaluation of a run: perplexities and KL to each teacher, before vs after; loss curves.

Definitions (all on the held-out split, response tokens only, temperature 1):

- *perplexity* of a model = exp(total NLL of the counted text / number of **student** tokens it
  spans). For the student and same-tokenizer teachers this is ordinary per-token perplexity; a
  teacher with another tokenizer scores the same text with its own tokens, and dividing by the
  student's token count makes its number comparable (per-student-token perplexity).
- *KL to a teacher* = mean over counted positions of KL(p_teacher || p_student) in nats. For a
  teacher with another tokenizer it is taken at the aligned positions only, over the shared
  vocabulary (both distributions renormalized to it).
- *gap closed* toward teacher k, in log space:
  (ln ppl_before − ln ppl_after) / (ln ppl_before − ln ppl_teacher_k); 100% means the student
  now matches the teacher, 0% no progress, negative worse. Log space because plain perplexity
  gaps are dominated by the (huge) starting perplexity of a cut-down student.

Also here: :func:`probe_layers` (initial perplexity of several layer selections, to choose a
student) and :func:`plot_losses` (loss-curve PNG from ``metrics.jsonl``).

Test: ``pytest tests/training/test_trainer.py -k report``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from distillm_edge.errors import UserError
from distillm_edge.training.batches import Example, collate
from distillm_edge.training.losses import cross_entropy_loss, kd_loss


@dataclass
class Scores:
    """Sums over the evaluation set for one model (student or teacher)."""

    nll: float = 0.0
    student_tokens: int = 0
    kl: dict[str, float] = field(default_factory=dict)  # teacher name -> summed KL
    kl_rows: dict[str, int] = field(default_factory=dict)
    # another-tokenizer teacher only: alignment diagnostics over the evaluation set
    aligned: int = 0  # student positions with an aligned teacher position
    mass: float = 0.0  # summed teacher probability on the shared vocabulary at those positions
    vocab_overlap: float | None = None  # shared tokens / student vocabulary

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.student_tokens) if self.student_tokens else float("nan")

    def mean_kl(self, teacher: str) -> float:
        rows = self.kl_rows.get(teacher, 0)
        return self.kl[teacher] / rows if rows else float("nan")


def _rows(logits: torch.Tensor) -> torch.Tensor:
    """Flat [N, V] rows (from ``logits_to_keep=<bool mask>``) as a [1, N, V] batch for the losses."""
    return logits.reshape(1, -1, logits.shape[-1])


@torch.inference_mode()
def evaluate(students: dict[str, torch.nn.Module], teachers: Sequence, examples: Sequence[Example],
             pad_id: int, progress: Callable[[int], None] | None = None) -> dict[str, Scores]:
    """Scores of every student (by name) and teacher (by ``teacher.name``), one example at a time.

    Each teacher runs once per example; its distribution is compared with every student's.
    """
    from distillm_edge.training.cached_teachers import score_cached
    from distillm_edge.training.teachers import cross_rows_kl, teacher_forward

    scores = {name: Scores() for name in students} | {t.name: Scores() for t in teachers}
    for i, ex in enumerate(examples):
        batch = collate([ex], pad_id, {t.index: t.pad_id for t in teachers if not t.same_tokenizer})
        n = batch.tokens
        s_logits = {}
        for name, model in students.items():
            device = next(model.parameters()).device
            out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                        logits_to_keep=batch.loss_mask.to(device))
            logits = s_logits[name] = _rows(out.logits)
            sc = scores[name]
            sc.nll += float(cross_entropy_loss(logits, batch.targets.view(1, -1).to(device), normalizer=1.0))
            sc.student_tokens += n
        vocab = next(iter(s_logits.values())).shape[-1] if s_logits else 0
        for t in teachers:
            if t.cache is not None:  # a cached teacher is scored from its cache (cached_teachers.py)
                score_cached(scores, t, ex, s_logits, n)
                continue
            out = teacher_forward(t, batch, student_vocab=vocab, for_eval=True)
            sc = scores[t.name]
            sc.nll += out.nll
            sc.student_tokens += n
            if not t.same_tokenizer:
                _alignment(sc, t, out, batch, vocab)
            for name, logits in s_logits.items():
                if t.same_tokenizer:
                    kl, rows = float(kd_loss(logits, out.logits.to(logits.device), normalizer=1.0)), n
                else:
                    kl, rows = cross_rows_kl(t, logits, out, batch)
                st = scores[name]
                st.kl[t.name] = st.kl.get(t.name, 0.0) + kl
                st.kl_rows[t.name] = st.kl_rows.get(t.name, 0) + rows
        if progress is not None:
            progress(i + 1)
    return scores


def _alignment(sc: Scores, t, out, batch, student_vocab: int) -> None:
    """Add one example's aligned positions and shared-vocabulary teacher mass (full teacher softmax)."""
    view = batch.views[t.index]
    sc.aligned += int(view.student_rows.numel())
    sc.vocab_overlap = len(t.vocab_map[1]) / student_vocab if student_vocab else None
    if view.student_rows.numel() and not out.shared_only:
        rows = out.logits[0, view.eval_teacher_rows.to(out.logits.device)].float()
        t_ids = t.vocab_map[1].to(rows.device)
        sc.mass += float((rows[:, t_ids].logsumexp(-1) - rows.logsumexp(-1)).exp().sum())


def gap_closed(before: float, after: float, teacher: float) -> float:
    """Share of the log-perplexity gap to the teacher closed by training (see module docstring)."""
    denom = math.log(before) - math.log(teacher)
    return (math.log(before) - math.log(after)) / denom if denom > 0 else float("nan")


def summary(scores: dict[str, Scores], teacher_names: Sequence[str], before: str = "before",
            after: str = "after") -> dict:
    """A JSON-ready dict of the table's numbers."""
    b, a = scores[before], scores[after]
    out = {
        "student_perplexity": {"before": b.perplexity, "after": a.perplexity},
        "perplexity_reduction": 1.0 - a.perplexity / b.perplexity,
        "eval_student_tokens": b.student_tokens,
        "teachers": {},
    }
    for name in teacher_names:
        ppl = scores[name].perplexity
        out["teachers"][name] = {
            "perplexity": ppl,
            "kl_before": b.mean_kl(name),
            "kl_after": a.mean_kl(name),
            "gap_closed_log": gap_closed(b.perplexity, a.perplexity, ppl),
        }
        t = scores[name]
        if t.vocab_overlap is not None:
            out["teachers"][name]["alignment"] = {
                "aligned_share": t.aligned / t.student_tokens if t.student_tokens else float("nan"),
                "vocab_overlap": t.vocab_overlap,
                "teacher_mass_on_shared": t.mass / t.aligned if t.aligned else float("nan"),
            }
    return out


def format_table(summ: dict) -> str:
    """The fixed-width before/after table printed at the end of a run (and saved as report.md)."""
    sp = summ["student_perplexity"]
    rows = [("student perplexity", f"{sp['before']:.2f}", f"{sp['after']:.2f}")]
    for name, t in summ["teachers"].items():
        rows.append((f"KL({name} || student), nats/token", f"{t['kl_before']:.3f}", f"{t['kl_after']:.3f}"))
    for name, t in summ["teachers"].items():
        rows.append((f"teacher perplexity: {name}", f"{t['perplexity']:.2f}", ""))
    for name, t in summ["teachers"].items():
        rows.append((f"gap to {name} closed (log space)", "", f"{100 * t['gap_closed_log']:.1f}%"))
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'held-out metric':<{width}} | {'before':>10} | {'after':>10} |", f"|{'-' * (width + 2)}|{'-' * 12}|{'-' * 12}|"]
    lines += [f"| {a:<{width}} | {b:>10} | {c:>10} |" for a, b, c in rows]
    red = summ["perplexity_reduction"]
    lines += [
        "",
        f"Student perplexity fell {100 * red:.1f}% ({sp['before']:.1f} -> {sp['after']:.1f}, "
        f"{sp['before'] / sp['after']:.1f}x lower) on {summ['eval_student_tokens']} held-out response tokens.",
        "Perplexities are per student token; KL for another-tokenizer teacher: aligned positions, shared vocabulary.",
        "Gap closed = (ln ppl_before - ln ppl_after) / (ln ppl_before - ln ppl_teacher).",
    ]
    for name, t in summ["teachers"].items():
        if "alignment" in t:
            al = t["alignment"]
            lines.append(f"Alignment to {name}: {100 * al['aligned_share']:.1f}% of student positions aligned, "
                         f"shared vocabulary {100 * al['vocab_overlap']:.1f}% of the student's, teacher mass on it "
                         f"{100 * al['teacher_mass_on_shared']:.1f}%.")
    return "\n".join(lines)


@torch.inference_mode()
def perplexity(model: torch.nn.Module, examples: Sequence[Example], pad_id: int) -> float:
    """Per-token response perplexity of one model (student tokenizer) over ``examples``."""
    scores = evaluate({"model": model}, [], examples, pad_id)
    return scores["model"].perplexity


def probe_layers(source_model: torch.nn.Module, strategies: Sequence[str], examples: Sequence[Example],
                 pad_id: int) -> list[tuple[str, int, float]]:
    """(strategy, number of layers, initial perplexity) for each layer selection of ``source_model``."""
    from distillm_edge.models import build_student, select_layers

    out = []
    for strategy in strategies:
        layers = select_layers(source_model.config.get_text_config().num_hidden_layers, strategy)
        student = build_student(source_model, layers).eval()
        out.append((strategy, len(layers), perplexity(student, examples, pad_id)))
        del student
    return out


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    """Loss curves (total and each part, per optimizer step) from ``metrics.jsonl`` to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = list({r["step"]: r for r in rows if r.get("kind") == "train"}.values())  # a resumed run repeats steps: keep the last
    rows.sort(key=lambda r: r["step"])
    if not rows:
        return
    keys = ["loss"] + sorted({k for r in rows for k in r if k.startswith("loss/")})
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for key in keys:
        pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None and math.isfinite(r[key])]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=key, linewidth=1.8 if key == "loss" else 1.0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("distillm-edge train: loss per step")
    fig.tight_layout()
    from distillm_edge.io import atomic_path

    with atomic_path(Path(png_path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


class RunLog:
    """Where a run reports: console (rich bar or one line per step), metrics.jsonl, TensorBoard, W&B.

    Only the main process writes (``enabled``). ``metrics.jsonl`` is appended to (a resumed run
    continues it); TensorBoard purges events after the resumed step.
    """

    def __init__(self, run_dir: Path, cfg, *, enabled: bool = True) -> None:
        from rich.console import Console

        self.cfg, self.enabled, self.run_dir = cfg, enabled, Path(run_dir)
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.metrics = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") if enabled else None  # noqa: SIM115
        self.tb = self.wandb = self.bar = self.task_id = None
        if enabled and cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise UserError("wandb: true needs the wandb package: pip install wandb (or set wandb: false).") from None
            self.wandb = wandb.init(project=cfg.wandb_project, dir=str(self.run_dir), name=self.run_dir.name,
                                    config=_plain(cfg), resume="allow")

    def say(self, message: str) -> None:
        if self.enabled:
            (self.bar.console if self.bar is not None else self.console).print(message)

    def result(self, text: str) -> None:
        """Print a final result to stdout, verbatim."""
        if self.enabled:
            print(text, flush=True)

    def start(self, total_steps: int, done: int) -> None:
        if not self.enabled:
            return
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=done or None)
        if self.cfg.progress and self.console.is_terminal:  # redirected output gets the log lines only
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("train"), BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.description}"),
                                console=self.console, transient=False)
            self.bar.start()
            self.task_id = self.bar.add_task("", total=total_steps, completed=done)

    def step(self, state, parts: dict[str, float], *, tau: float, lr: float, grad_norm: float, tokens_per_s: float,
             skipped: bool, mfu: float | None = None, extra: dict | None = None) -> None:
        if not self.enabled:
            return
        row = {"kind": "train", "step": state.step, "loss": parts["loss"]}
        row |= {f"loss/{k}": v for k, v in parts.items() if k != "loss"}
        row |= {"tau": tau, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s, "target_tokens": state.tokens,
                "elapsed_s": round(state.elapsed, 2), "skipped": skipped}
        if mfu is not None:
            row["mfu"] = mfu
        row |= extra or {}
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step" and math.isfinite(v):
                    self.tb.add_scalar(k if "/" in k else f"train/{k}", v, state.step)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if k != "kind"}, step=state.step)
        short = " ".join(f"{k.replace('kd/', '')} {v:.3f}" for k, v in parts.items() if k != "loss")
        desc = f"loss {parts['loss']:.4f} ({short}) τ {tau:.2f} lr {lr:.1e} {tokens_per_s:,.0f} tok/s"
        if skipped:
            desc += f" [red]non-finite, skipped ({state.bad_in_row} in a row)[/]"
        if self.bar is not None:
            self.bar.update(self.task_id, completed=state.step, description=desc)
        if state.step % self.cfg.log_every == 0 or skipped or self.bar is None:
            line = (f"step {state.step:>6} | loss {parts['loss']:>8.4f} | {short:<48} | tau {tau:>5.2f} | lr {lr:.2e} | "
                    f"{tokens_per_s:>7,.0f} tok/s" + (f" | MFU {100 * mfu:>5.1f}%" if mfu is not None else "")
                    + "".join(f" | {k} {v}" for k, v in (extra or {}).items())
                    + f" | {state.elapsed / 60:>5.1f} min" + (" | SKIPPED (non-finite)" if skipped else ""))
            self.say(line)

    def event(self, kind: str, data: dict) -> None:
        if self.enabled:
            self.metrics.write(json.dumps({"kind": kind, **data}) + "\n")
            self.metrics.flush()
            if self.wandb is not None:
                self.wandb.summary.update({kind: data})

    def task(self, description: str, total: int):
        """A context manager yielding ``advance(completed)`` for a secondary progress bar."""
        import contextlib

        @contextlib.contextmanager
        def bar():
            if not (self.enabled and self.cfg.progress and self.console.is_terminal):
                yield lambda _n: None
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn(description), BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=self.console, transient=True) as p:
                task = p.add_task("", total=total)
                yield lambda n: p.update(task, completed=n)

        return bar()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def close(self) -> None:
        self.stop()
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _plain(cfg) -> dict:
    from distillm_edge.config import to_dict

    return to_dict(cfg)
