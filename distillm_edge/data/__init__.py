"""Medical data pipeline (``distillm-edge data prepare``) and the helpers the trainer uses.

Public API:
- :func:`load_prepared` — the prepared ``DatasetDict`` (splits ``train`` and ``valid``; columns
  ``id, instruction, input, response, source, specialty, difficulty``);
- :data:`SPECIALTIES` — specialty labels (``general`` last); :data:`DIFFICULTY_STAGES` — the four
  curriculum stages (1 basic anatomy → 4 treatment planning);
- :func:`builtin_corpus_path` — the embedded medical QA corpus (JSONL);
- :class:`PrepareConfig` and :func:`run` — the pipeline itself (see ``pipeline.py``).

Test: ``pytest tests/data``.
"""

from __future__ import annotations

from pathlib import Path

from distillm_edge.data.pipeline import PrepareConfig, builtin_corpus_path, run
from distillm_edge.data.records import COLUMNS, DIFFICULTY_STAGES, SPECIALTIES
from distillm_edge.errors import UserError


def load_prepared(path: str | Path):
    """Load a folder written by ``data prepare`` as a ``datasets.DatasetDict`` (train / valid)."""
    import datasets

    path = Path(path).expanduser()
    if not (path / "dataset_dict.json").is_file():
        raise UserError(f"{path}: not a prepared dataset (no dataset_dict.json); run `distillm-edge data prepare --out {path}`.")
    dataset = datasets.load_from_disk(str(path))
    missing = [c for c in COLUMNS if c not in dataset["train"].column_names]
    if missing:
        raise UserError(f"{path}: prepared dataset lacks columns {', '.join(missing)}; re-run `distillm-edge data prepare`.")
    return dataset


__all__ = ["COLUMNS", "DIFFICULTY_STAGES", "SPECIALTIES", "PrepareConfig", "builtin_corpus_path", "load_prepared", "run"]
