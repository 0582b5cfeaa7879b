"""Configs of ``review export`` and ``review import`` (frozen, validated in ``__post_init__``).

Test: ``pytest tests/review/test_review.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distillm_edge.errors import UserError

SHEET_SUFFIXES = (".csv", ".jsonl")
# The research's four verdicts, graded yes/no for every answer (sheet column names).
VERDICTS = ("more_comprehensive", "accurate", "critical_error", "omissions")


def key_path_for(sheet: str | Path) -> Path:
    """Where the key of a sheet lives by default: beside it, ``<sheet>.key.json``."""
    sheet = Path(sheet)
    return sheet.with_name(sheet.name + ".key.json")


@dataclass(frozen=True)
class ReviewExportConfig:
    models: tuple[str, ...]
    data: str
    n: int = 89
    seed: int = 0
    out: str = "review_sheet.csv"
    key: str | None = None  # None: <out>.key.json
    backend: str = "auto"
    max_new_tokens: int = 256
    temperature: float = 0.0  # greedy by default: a sheet can be regenerated exactly
    top_p: float = 1.0
    threads: int = 0  # 0: the backend's default

    def __post_init__(self) -> None:
        if not self.models:
            raise UserError("review export needs at least one --model.")
        if self.n < 1:
            raise UserError(f"--n must be at least 1 (got {self.n}).")
        if Path(self.out).suffix not in SHEET_SUFFIXES:
            raise UserError(f"--out {self.out}: the sheet must end in .csv or .jsonl.")
        if self.key is not None and Path(self.key).resolve() == Path(self.out).resolve():
            raise UserError("--key must differ from --out: the key un-blinds the sheet and is kept apart.")
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be at least 1 (got {self.max_new_tokens}).")


@dataclass(frozen=True)
class ReviewImportConfig:
    sheet: str
    key: str | None = None  # None: <sheet>.key.json
    out: str | None = None  # optional JSON report

    def __post_init__(self) -> None:
        if Path(self.sheet).suffix not in SHEET_SUFFIXES:
            raise UserError(f"{self.sheet}: a review sheet is a .csv or .jsonl file written by 'review export'.")
