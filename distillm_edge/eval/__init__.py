"""``distillm-edge eval``: medical benchmarks, generation quality, calibration and teacher retention.

- ``config``: ``EvalConfig`` (what the CLI fills);
- ``mcq_data`` / ``prompts``: MMLU-medical, MedQA, MedMCQA, PubMedQA loaders and lm-eval's prompts;
- ``scoring``: log-likelihood scoring of choices on any backend (``distillm_edge.backends``);
- ``metrics`` / ``text_metrics``: accuracy aggregation, ECE, Brier, retention; ROUGE, BLEU, perplexity;
- ``generation``: greedy generation on instruction data;
- ``harness``: the same MMLU tasks as lm-evaluation-harness YAML configs, for agreement checks;
- ``report`` / ``run``: the run directory and the top-level ``run(cfg)``.

Run: ``distillm-edge eval --help``. Test: ``pytest tests/eval``.
"""

from distillm_edge.eval.config import EvalConfig

__all__ = ["EvalConfig"]
