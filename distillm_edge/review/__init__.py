"""Expert review, made repeatable: blinded answer sheets out, graders' verdicts back in.

- ``export.py``: sample N questions, answer them with each model, write a shuffled sheet in which
  every answer carries a random label, and a separate key (0600) that maps labels to models;
- ``verdicts.py``: read the graded sheet and the key, and report per-model rates of the research's
  four verdicts (more comprehensive, accurate, critical error, omissions) with Wilson 95% intervals.

Run: ``distillm-edge review export --model A --model B --data DIR --n 89`` then
``distillm-edge review import review_sheet.csv``.
Test: ``pytest tests/review``.
"""
