"""Build a student by keeping a subset of a teacher's decoder layers.

Strategies (a string, as written in recipes and on the command line):

- ``even:K`` — K evenly spaced layers including the first and last, the research's layer map
  ({0:0, 4:1, 8:2, ...} for a 4× reduction);
- ``first-last:A,B`` — the first A and the last B blocks (for SmolLM2 the first 8 + last 7 keep
  held-out perplexity in the thousands where evenly spaced maps reach millions);
- ``0,1,2,29`` — an explicit, strictly increasing list of teacher layer indices.

The student is a fresh model of the teacher's architecture with ``num_hidden_layers`` = K, whose
weights are copied from the kept layers (embeddings, final norm and head are copied too). The map
``{student_layer: teacher_layer}`` is stored in the student's config as ``distillm_layer_map`` so
later hidden-state/attention alignment can find the matching teacher layer. Per-layer config
lists (Gemma-3's ``layer_types`` sliding/full pattern) are subset the same way.

Test: ``pytest tests/models/test_student.py``.
"""

from __future__ import annotations

import copy
import re

from distillm_edge.errors import UserError


def select_layers(num_layers: int, strategy: str) -> list[int]:
    """Parse a layer-selection strategy into sorted teacher layer indices."""
    text = strategy.strip()
    if m := re.fullmatch(r"even:(\d+)", text):
        k = int(m.group(1))
        if not 1 <= k <= num_layers:
            raise UserError(f"layers '{text}': K must be between 1 and {num_layers}.")
        if k == 1:
            return [0]
        return sorted({round(i * (num_layers - 1) / (k - 1)) for i in range(k)})
    if m := re.fullmatch(r"first-last:(\d+),(\d+)", text):
        a, b = int(m.group(1)), int(m.group(2))
        if a + b == 0 or a + b > num_layers:
            raise UserError(f"layers '{text}': A+B must be between 1 and {num_layers}.")
        return list(range(a)) + list(range(num_layers - b, num_layers))
    if re.fullmatch(r"\d+(\s*,\s*\d+)*", text):
        layers = [int(x) for x in text.split(",")]
        if layers != sorted(set(layers)) or layers[-1] >= num_layers:
            raise UserError(
                f"layers '{text}': an explicit list must be strictly increasing indices below {num_layers}."
            )
        return layers
    raise UserError(
        f"layers '{text}' is not a layer selection; use even:K, first-last:A,B or an explicit list like 0,1,2,29."
    )


def student_config(teacher_config, layers: list[int]):
    """The teacher's config with only ``layers`` kept, recording the layer map."""
    cfg = copy.deepcopy(teacher_config)
    cfg.num_hidden_layers = len(layers)
    for attr in ("layer_types",):
        values = getattr(cfg, attr, None)
        if isinstance(values, (list, tuple)) and len(values) == teacher_config.num_hidden_layers:
            setattr(cfg, attr, [values[i] for i in layers])
    cfg.distillm_layer_map = {str(s): t for s, t in enumerate(layers)}
    return cfg


def build_student(teacher, layers: list[int]):
    """A new model of the teacher's architecture holding copies of the kept layers' weights."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = student_config(teacher.config, layers)
    dtype = next(teacher.parameters()).dtype
    student = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    source = teacher.state_dict()
    pattern = re.compile(r"^(.*\.layers\.)(\d+)(\..*)$")
    state = {}
    for key in student.state_dict():
        m = pattern.match(key)
        src = f"{m.group(1)}{layers[int(m.group(2))]}{m.group(3)}" if m else key
        if src not in source:
            raise RuntimeError(f"cannot find teacher weight '{src}' for student weight '{key}'")
        state[key] = source[src].detach().clone()
    with torch.no_grad():
        student.load_state_dict(state, strict=True)
    if getattr(cfg, "tie_word_embeddings", False):
        student.tie_weights()
    return student


def layer_map(config) -> dict[int, int]:
    """The ``{student_layer: teacher_layer}`` map saved in a student config ({} if none)."""
    raw = getattr(config, "distillm_layer_map", None) or {}
    return {int(k): int(v) for k, v in raw.items()}
