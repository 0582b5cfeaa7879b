"""ChatConfig validation and the CLI wiring of ``distillm-edge chat``.

Run: ``pytest tests/chat/test_chat_config.py``.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from distillm_edge.chat.config import DEFAULT_SYSTEM_PROMPT, ChatConfig
from distillm_edge.cli import app
from distillm_edge.errors import UserError


def test_defaults_and_system_prompt_file(tmp_path):
    assert ChatConfig().model == "smollm2-135m-instruct"
    assert ChatConfig().system_prompt() == DEFAULT_SYSTEM_PROMPT
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Be brief.\n")
    assert ChatConfig(system_prompt_file=prompt).system_prompt() == "Be brief."
    prompt.write_text("  \n")
    with pytest.raises(UserError, match="prompt.txt: the file is empty"):
        ChatConfig(system_prompt_file=prompt).system_prompt()


@pytest.mark.parametrize("kwargs, match", [
    ({"backend": "vllm"}, "--backend 'vllm'"),
    ({"clinician": "  "}, "--clinician is empty"),
    ({"system_prompt_file": "/nonexistent/p.txt"}, "--system-prompt /nonexistent/p.txt: no such file"),
])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(UserError, match=match):
        ChatConfig(**kwargs)


def test_cli_registers_chat_and_reports_bad_input():
    runner = CliRunner()
    result = runner.invoke(app, ["chat", "--help"])
    assert result.exit_code == 0 and "--clinician" in result.output and "--audit-db" in result.output
    result = runner.invoke(app, ["chat", "--backend", "vllm"])
    assert result.exit_code == 2 and "--backend 'vllm'" in result.output
