"""``EvalConfig``: everything one ``distillm-edge eval`` run needs, validated up front.

The CLI (``distillm_edge/cli/eval.py``) only fills this dataclass; ``eval.run.run(cfg)`` does the
work. The resolved config is saved as ``config.yaml`` in the run directory.

Test: ``pytest tests/eval/test_run.py`` (config validation).
"""

from __future__ import annotations

from dataclasses import dataclass

from distillm_edge.backends import BACKENDS
from distillm_edge.errors import UserError

TASKS = ("mmlu_medical", "medqa", "medmcqa", "pubmedqa", "generation")
SPLITS = ("auto", "dev", "val", "test")


@dataclass(frozen=True)
class EvalConfig:
    model: str  # the student: embedded name, HF dir, .gguf file or ONNX dir
    teacher: str | None = None  # reported side by side, with retention = student / teacher
    baseline: str | None = None  # the undistilled student, with improvement = student - baseline
    backend: str = "auto"  # auto (from each model spec), torch, gguf or onnx; applies to every model
    tasks: tuple[str, ...] = ("mmlu_medical",)
    data_dir: str | None = None  # a folder in the layout of ../shared/data; None = the Hub
    mmlu_dir: str | None = None  # overrides <data_dir>/mmlu
    split: str = "auto"  # MMLU split scored: auto = test when the MMLU folder has test/ (and on the Hub), as
    # lm-eval does, else val; few-shot examples always come from dev
    num_fewshot: int = 0  # MMLU examples from the dev split; the other benchmarks are zero-shot
    limit: int = 0  # first N items per task / MMLU subject / generation records (0 = all)
    data: str | None = None  # generation data: JSON/JSONL(.gz) file or save_to_disk dir
    max_new_tokens: int = 128  # generation budget per answer
    max_ref_words: int = 200  # reference words scored (bits per byte, perplexities): the same text for every model
    ece_bins: int = 10  # equal-width confidence bins for the expected calibration error
    threads: int = 0  # CPU threads (0 = the runtime's default)
    seed: int = 0  # recorded; greedy decoding and log-likelihood scoring are deterministic
    out: str | None = None  # run directory (default runs/eval/<time>-<model>)

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise UserError(f"--tasks: unknown task(s) {', '.join(unknown) or '(none given)'}; "
                            f"choose from {', '.join(TASKS)}.")
        if len(set(self.tasks)) != len(self.tasks):
            raise UserError("--tasks: a task is listed twice.")
        if self.backend not in ("auto", *BACKENDS):
            raise UserError(f"--backend '{self.backend}' is not supported; use auto, {', '.join(BACKENDS)}.")
        if self.split not in SPLITS:
            raise UserError(f"--split '{self.split}' is not one of {', '.join(SPLITS)}.")
        if not 0 <= self.num_fewshot <= 5:
            raise UserError("--num-fewshot must be between 0 and 5 (MMLU's dev split has 5 examples per subject).")
        if self.split == "dev" and self.num_fewshot > 0:
            raise UserError("--split dev with --num-fewshot > 0 would score the few-shot examples themselves; "
                            "evaluate --split val (or test) instead.")
        if "generation" in self.tasks and not self.data:
            raise UserError("--tasks generation needs --data PATH (JSON/JSONL or a save_to_disk directory).")
        if self.data and "generation" not in self.tasks:
            raise UserError("--data is only read by the generation task; add generation to --tasks.")
        for name, value in (("--limit", self.limit), ("--threads", self.threads)):
            if value < 0:
                raise UserError(f"{name} must be >= 0.")
        if self.max_new_tokens < 1 or self.max_ref_words < 1:
            raise UserError("--max-new-tokens and --max-ref-words must be >= 1.")
        if self.ece_bins < 1:
            raise UserError("--ece-bins must be >= 1.")
