"""Importance matrices: collection against a naive reference, the GGUF and legacy file formats read
back (by gguf-py and by our reader), llama.cpp's quantizer taking them, and an imatrix quantization
that differs from the plain one and is not worse on held-out text (tiny random Llama; the real
SmolLM2 numbers come from ``benchmarks/imatrix.py``).

Run: ``pytest tests/export/test_imatrix.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from distillm_edge.errors import UserError
from distillm_edge.export import imatrix as im


def test_calibration_and_held_out_texts_are_disjoint_and_cover_the_corpus():
    calib, held = im.calibration_texts(), im.held_out_texts()
    assert calib and held
    assert not set(calib) & set(held)
    assert len(calib) + len(held) == len(im.builtin_records())


def test_chunks_cut_like_llama_imatrix():
    assert im.chunks(list(range(10)), 4, None) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert im.chunks(list(range(10)), 4, 99) == [[99, 0, 1, 2], [99, 3, 4, 5], [99, 6, 7, 8]]
    assert im.chunks([1, 2], 4, None) == [[1, 2]]


def test_spread_picks_evenly_including_both_ends():
    assert im.spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert im.spread([1, 2], 5) == [1, 2] and im.spread([1, 2, 3], 1) == [1]


def test_collect_matches_a_naive_sum_of_squares(tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from distillm_edge.export.gguf_convert import gguf_name

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    chunked = [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]]
    got = im.collect(model, chunked, gguf_name)
    # naive: capture each input of layer 1's down projection, square and sum by hand
    seen = []
    handle = model.model.layers[1].mlp.down_proj.register_forward_hook(lambda m, a, o: seen.append(a[0][0].clone()))
    with torch.no_grad():
        for ids in chunked:
            model(torch.tensor([ids]))
    handle.remove()
    x = torch.cat(seen).double()
    np.testing.assert_allclose(got.sums["blk.1.ffn_down.weight"], (x * x).sum(0).numpy(), rtol=1e-10)
    assert got.counts["blk.1.ffn_down.weight"] == 12
    names = {f"blk.{i}.{t}.weight" for i in range(2) for t in
             ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
    assert set(got.sums) == names  # blk.* only, like llama-imatrix: no token_embd / output
    assert got.sums["blk.0.attn_q.weight"].shape == (64,) and got.sums["blk.0.ffn_down.weight"].shape == (128,)


def _random_imatrix(seed=0) -> im.Imatrix:
    rng = np.random.default_rng(seed)
    return im.Imatrix(sums={"blk.0.attn_q.weight": rng.random(64) * 10, "blk.0.ffn_down.weight": rng.random(128)},
                      counts={"blk.0.attn_q.weight": 300, "blk.0.ffn_down.weight": 300},
                      datasets=["builtin.jsonl"], chunk_count=3, chunk_size=100)


def test_gguf_file_round_trips_in_llama_imatrix_layout(tmp_path):
    from gguf import GGUFReader

    matrix = _random_imatrix()
    path = tmp_path / "m.imatrix.gguf"
    im.write_imatrix(matrix, path)
    reader = GGUFReader(path)
    assert reader.fields["general.type"].contents() == "imatrix"
    assert "general.architecture" not in reader.fields
    assert reader.fields["imatrix.chunk_count"].contents() == 3
    assert reader.fields["imatrix.chunk_size"].contents() == 100
    assert reader.fields["imatrix.datasets"].contents() == ["builtin.jsonl"]
    tensors = {t.name: t for t in reader.tensors}
    assert list(tensors["blk.0.attn_q.weight.in_sum2"].shape) == [64, 1]  # ggml ne = [in, n_mat]
    assert list(tensors["blk.0.attn_q.weight.counts"].shape) == [1, 1]
    back = im.read_imatrix(path)
    for name, values in matrix.values().items():
        np.testing.assert_allclose(back.values()[name], values, rtol=1e-6)
    assert back.datasets == ["builtin.jsonl"] and back.chunk_count == 3


def test_legacy_dat_file_reads_to_the_same_values(tmp_path):
    matrix = _random_imatrix(1)
    path = tmp_path / "m.dat"
    im.write_legacy(matrix, path)
    back = im.read_imatrix(path)
    for name, values in matrix.values().items():
        np.testing.assert_allclose(back.values()[name], values, rtol=1e-6)
    assert back.datasets == ["builtin.jsonl"] and back.chunk_count == 3


@pytest.mark.parametrize("content", [b"", b"GGUF\x03\x00\x00\x00garbage", b"\x02\x00\x00\x00\xff\xff\xff\x7f"])
def test_bad_imatrix_files_give_a_user_error(tmp_path, content):
    path = tmp_path / "bad.imatrix"
    path.write_bytes(content)
    with pytest.raises(UserError, match="--imatrix"):
        im.read_imatrix(path)


def _held_out_nll(path, texts) -> float:
    from distillm_edge.backends.llamacpp_backend import LlamaCppBackend

    backend = LlamaCppBackend(str(path), threads=2, n_ctx=512)
    try:
        total, n = 0.0, 0
        for text in texts:
            ids = backend.tokenize(text)[:200]
            lp = backend.token_logprobs(ids)
            total, n = total - float(lp.sum()), n + lp.size
        return total / n
    finally:
        backend.close()


def test_imatrix_quantization_is_taken_by_llamacpp_differs_and_is_not_worse(tmp_path, tiny_gguf, tiny_llama_dir):
    from distillm_edge.export import gguf_quantize

    matrix = im.compute(tiny_llama_dir, im.calibration_texts()[:40], chunk_tokens=256)
    path = tmp_path / "tiny.imatrix.gguf"
    im.write_imatrix(matrix, path)
    values = im.read_imatrix(path).values()  # what the quantizer gets went through the file
    plain, weighted = tmp_path / "plain.gguf", tmp_path / "imatrix.gguf"
    gguf_quantize.quantize(tiny_gguf("f32"), plain, "q4_0", threads=2)
    report = gguf_quantize.quantize(tiny_gguf("f32"), weighted, "q4_0", threads=2, imatrix=values)
    assert report.imatrix_entries == 14
    assert not [t for t in report.imatrix_missing if t.startswith("blk.")]  # every block weight found its entry
    assert plain.read_bytes() != weighted.read_bytes()
    held = im.held_out_texts()[:12]
    reference = _held_out_nll(tiny_gguf("f32"), held)
    plain_err = abs(_held_out_nll(plain, held) - reference)
    weighted_err = abs(_held_out_nll(weighted, held) - reference)
    assert weighted_err <= plain_err * 1.05, (plain_err, weighted_err)


def test_a_wrong_sized_imatrix_is_refused_by_llamacpp(tmp_path, tiny_gguf):
    from distillm_edge.export import gguf_quantize

    bad = {"blk.0.attn_q.weight": np.ones(63, dtype=np.float32)}
    with pytest.raises(RuntimeError, match="imatrix size"):
        gguf_quantize.quantize(tiny_gguf("f32"), tmp_path / "x.gguf", "q4_0", threads=2, imatrix=bad)


def test_imatrix_option_only_for_llamacpp_types():
    from distillm_edge.export.config import ExportConfig

    assert ExportConfig(model="m", quant="q4_k_m", imatrix="builtin").imatrix == "builtin"
    for kwargs in ({"quant": "f16"}, {"format": "onnx", "quant": "int4"}):
        with pytest.raises(UserError, match="--imatrix"):
            ExportConfig(model="m", imatrix="builtin", **kwargs)



def test_export_with_builtin_imatrix_saves_it_and_records_it(tmp_path, tiny_llama_dir):
    from distillm_edge.export import ExportConfig, run

    result = run(ExportConfig(model=str(tiny_llama_dir), quant="q4_0", imatrix="builtin", outdir=tmp_path,
                              verify=False, threads=2))
    info = result.manifest["export"]["imatrix"]
    saved = tmp_path / f"{tiny_llama_dir.name}.imatrix.gguf"
    assert info["file"] == str(saved) and saved.is_file() and info["entries"] == 14
    assert info["datasets"] == [im.BUILTIN_DATASET] and info["chunk_count"] >= 1
    assert not [t for t in info["missing"] if t.startswith("blk.")]
    again = run(ExportConfig(model=str(tiny_llama_dir), quant="q4_0", imatrix=str(saved), outdir=tmp_path / "b",
                             verify=False, threads=2))  # the saved file is taken back as --imatrix FILE
    assert again.artifact.read_bytes() == result.artifact.read_bytes()

@pytest.mark.slow
def test_smollm2_iq4_xs_with_imatrix_is_not_worse_on_held_out_text(tmp_path, smollm2_dir, smollm2_tokenizer):
    from distillm_edge.export import gguf_quantize
    from distillm_edge.export.checkpoint import open_checkpoint
    from distillm_edge.export.gguf_convert import write_gguf

    f32 = tmp_path / "smollm2-f32.gguf"
    write_gguf(open_checkpoint(smollm2_dir), smollm2_tokenizer, f32, "f32", "smollm2")
    values = im.compute(smollm2_dir, im.calibration_texts()[:80], threads=2).values()
    plain, weighted = tmp_path / "plain.gguf", tmp_path / "imatrix.gguf"
    gguf_quantize.quantize(f32, plain, "iq4_xs", threads=2)
    report = gguf_quantize.quantize(f32, weighted, "iq4_xs", threads=2, imatrix=values)
    assert not [t for t in report.imatrix_missing if t.startswith("blk.")]
    assert plain.read_bytes() != weighted.read_bytes()
    held = im.held_out_texts()[:30]
    reference = _held_out_nll(f32, held)
    assert _held_out_nll(weighted, held) - reference <= (_held_out_nll(plain, held) - reference) * 1.02
