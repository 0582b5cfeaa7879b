"""distillm-edge: distil large medical language models into small students that run on a laptop.

The package mirrors the CLI verbs: ``data``, ``training`` (``train``), ``eval``, ``export``,
``bench``; shared layers are ``models`` (model sources and loading), ``backends`` (one inference
interface over transformers, llama.cpp and ONNX Runtime) and ``config`` (typed configs).
"""

__version__ = "0.1.0"
