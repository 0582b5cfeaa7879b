"""`distillm-edge bench`: latency, throughput and memory of models on torch, llama.cpp and ONNX Runtime.

- ``config``: the frozen ``BenchConfig`` (built from CLI options by ``build_config``);
- ``prompts``: prompts of exactly N tokens cut from the shipped ``medical_text.json``;
- ``measure``: timing a token stream from outside, percentiles, per-run and summary statistics;
- ``memory``: running a job in a spawned child and reading its peak resident memory;
- ``batch``: batched greedy decoding on torch (batch 1 vs 8 throughput);
- ``roofline``: measured memory bandwidth and bytes read per token → the decode bound;
- ``worker``: one model × backend × prompt length, inside the child;
- ``run``: ``run(cfg)``, the whole run → ``bench.json``, ``report.md``, charts; ``report`` writes them;
- ``compare``: ``bench compare A.json B.json``.

Run: ``distillm-edge bench --model smollm2-135m-instruct --backend gguf --quick``.
Test: ``pytest tests/bench`` (add ``-m "not slow"`` to skip the real-model runs).
"""

from distillm_edge.bench.config import BenchConfig, ModelRun, build_config

# ``run`` lives in ``distillm_edge.bench.run`` and is not imported here: every benchmark child
# process imports this package, and it should stay as light as the interpreter itself.
__all__ = ["BenchConfig", "ModelRun", "build_config"]
