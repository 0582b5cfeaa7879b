"""Teacher tools: commands that study a teacher on its own, before it teaches.

- ``quantization_cost``: how much a teacher's next-token distribution moves when it is loaded in
  NF4 or int8 (mean KL(full || quantized) and top-1 agreement on held-out data) — the part of the
  teacher's signal the student can never learn back. CLI: ``distillm-edge teachers quantization-cost``.

Test: ``pytest tests/teachers``.
"""
