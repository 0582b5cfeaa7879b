"""Fixtures for the serve tests (helpers live in ``serve_helpers.py``).

Run: ``pytest tests/serve``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_backend(tiny_llama_dir):
    from distillm_edge.backends.torch_backend import TorchBackend

    return TorchBackend(str(tiny_llama_dir), threads=1)
