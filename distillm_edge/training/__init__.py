"""Training: the distillation math and (in ``trainer.py``) the loop that uses it.

- ``losses``: KD divergences (forward/reverse KL, generalized JSD, skew KL), cross-entropy, their
  mix, specialty weights and multi-teacher combination; chunked over tokens so no full
  [batch, seq, vocab] fp32 tensor is ever built.
- ``schedules``: temperature (progressive, linear, constant) and learning-rate multipliers.
- ``alignment``: hidden-state and attention alignment losses, L2 / L2-SP penalties.
- ``cross_tokenizer``: teaching a student whose tokenizer differs from the teacher's (character
  offset alignment, shared vocabulary, ULD).

Test: ``pytest tests/training``.
"""
