"""Hub ids in ``export``: downloaded (safetensors, config, tokenizer files) when online, and a clear
message saying what to do when offline or not cached — not "no config.json".

The download itself is replaced by a local directory (no network in tests).
Run: ``pytest tests/export/test_hub_ids.py``.
"""

from __future__ import annotations


def test_offline_hub_id_gives_a_clear_error(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from distillm_edge.cli import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = CliRunner().invoke(app, ["export", "--model", "some-org/some-model", "--outdir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "no config.json" not in text
    assert "some-org/some-model" in text and "offline" in text and "huggingface-cli download" in text


def test_online_hub_id_exports_the_downloaded_snapshot(tmp_path, tiny_llama_dir, monkeypatch):
    import huggingface_hub

    from distillm_edge.export import ExportConfig, run

    asked = {}

    def fake_download(repo_id, **kwargs):
        asked.update(repo_id=repo_id, **kwargs)
        return str(tiny_llama_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    result = run(ExportConfig(model="some-org/tiny-llama", format="gguf", quant="f16", outdir=tmp_path, verify=False))
    assert asked["repo_id"] == "some-org/tiny-llama" and "*.safetensors" in asked["allow_patterns"]
    assert result.artifact == tmp_path / "tiny-llama-f16.gguf" and result.artifact.is_file()
