"""Fixtures for the export tests: GGUF files of the tiny Llama (built once per session), a varied
tokenizer sample, and a cut-down parity input set so end-to-end checks stay fast on 2 cores.

Run: ``pytest tests/export``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TOKENIZER_SAMPLE = (
    "Patient: 67-year-old male, BP 162/98 mmHg, HbA1c 7.2%, eGFR 48 mL/min/1.73m². Started on "
    "acetylsalicylic acid 75 mg OD, atorvastatin 40mg nocte and a β-blocker (bisoprolol 2.5 mg).\n"
    "Differential: pheochromocytoma vs. hyperaldosteronism; r/o Cushing's. Dose 0.5 µg/kg/min, "
    "titrate q15min. ECG: ST↑ in V1–V4. Temp 38.9°C. SpO₂ 93 % on 2 L/min.\n"
    "Numbers: 1,000,000 3.14159 10^-6 2024-03-15 0x1F 1e-9 ½ ¾ 42nd 3rd.\n"
    "Unicode: Müller café naïve Ångström 心肌梗死 инфаркт миокарда احتشاء عضلة القلب हृदयाघात ሰላም\n"
    "Emojis: 💊🩺❤️‍🩹👩🏽‍⚕️🚑 🦠🧬 ✅❌\n"
    "Code:\n```python\ndef bmi(weight_kg: float, height_m: float) -> float:\n    return weight_kg / height_m**2  # kg/m²\n"
    "\tif x != 0 and y <= 3: print({'a': [1, 2]})\n```\n"
    "Whitespace:   three spaces,\t\ttabs, trailing   \n\n\n  and   'quotes' \"double\" I've we'll THEY'RE.\n"
    "Specials: <|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
)

CHAT = [
    {"role": "system", "content": "You are a careful clinical assistant."},
    {"role": "user", "content": "What is the maximum daily dose of paracetamol for an adult (70 kg)? 🤔"},
    {"role": "assistant", "content": "Usually 4 g/day; 2–3 g/day with hepatic impairment."},
    {"role": "user", "content": "And for a child weighing 18 kg?"},
]


@pytest.fixture(scope="session")
def tokenizer_sample() -> str:
    return TOKENIZER_SAMPLE


@pytest.fixture(scope="session")
def chat_sample() -> list[dict[str, str]]:
    return CHAT


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_llama_dir):
    """``tiny_gguf(outtype)`` → path of the tiny Llama written as GGUF (cached for the session)."""
    from transformers import AutoTokenizer

    from distillm_edge.export.checkpoint import open_checkpoint
    from distillm_edge.export.gguf_convert import write_gguf

    out_dir = tmp_path_factory.mktemp("tiny_gguf")
    cache: dict[str, Path] = {}

    def make(outtype: str) -> Path:
        if outtype not in cache:
            path = out_dir / f"tiny-{outtype}.gguf"
            write_gguf(open_checkpoint(tiny_llama_dir), AutoTokenizer.from_pretrained(tiny_llama_dir), path, outtype, "tiny")
            cache[outtype] = path
        return cache[outtype]

    return make


@pytest.fixture
def small_parity(monkeypatch):
    """Make export's parity check use 2 prompts, 1 reference text and 12-token continuations."""
    from distillm_edge.export import parity

    full = parity.load_inputs()
    monkeypatch.setattr(parity, "load_inputs", lambda: parity.ParityInputs(full.prompts[:2], full.texts[:1]))
    monkeypatch.setattr(parity, "MAX_NEW_TOKENS", 12)
