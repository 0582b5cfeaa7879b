"""ONNX export of text-only Gemma-3 (``Gemma3ForCausalLM``) and its run on our ONNX backend.

A tiny random Gemma-3 is built here (3 layers: sliding, full, sliding; a window of 16; hidden 48 so
sqrt(hidden) is not round; query_pre_attn_scalar != head_dim; final logit softcapping; random
norm weights so Gemma's 1 + w offset matters; SmolLM2's tokenizer). Its export must:

- hold what Gemma-3 means in the graph: per-layer window and RoPE cache (local theta for sliding
  layers), the query_pre_attn_scalar scale, the exact float32 embedding scale, softcapping;
- match transformers' logits on a 120-token sequence (past the window and past the window cache's
  capacity, so GQA's compaction runs) with the whole sequence at once and step by step on both of
  our backend's cache paths (shared windowed buffers, concatenation), and give the same greedy tokens;
- give the same greedy tokens as onnxruntime-genai's own Generator on the same export;
- pass export's parity check (the same bounds as the other architectures).

The slow test does the same on the embedded Gemma-3 270M (262,144-token vocab, window 512).

Run: ``pytest tests/export/test_onnx_gemma3.py`` (add ``-m slow`` for the real model).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

WINDOW = 16
TOL = 1e-4  # max |log-prob difference| allowed against transformers in float32


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory, smollm2_tokenizer):
    import torch
    import transformers as tf

    tok = smollm2_tokenizer
    cfg = tf.Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"], query_pre_attn_scalar=24,
        final_logit_softcapping=30.0, tie_word_embeddings=True,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = tf.Gemma3ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("tiny_gemma3")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_gemma3_onnx(tmp_path_factory, tiny_gemma3):
    from distillm_edge.export.onnx_convert import build_onnx

    out = tmp_path_factory.mktemp("tiny_gemma3_onnx") / "onnx"
    out.mkdir()
    build_onnx(tiny_gemma3, out, "fp32", 3)
    return out


def _hf_logprobs(model_dir, ids) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    from distillm_edge.backends.base import log_softmax

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return log_softmax(model(torch.tensor([list(ids)])).logits[0].numpy())


def _hf_greedy(model_dir, ids, n) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([list(ids)]), max_new_tokens=n, do_sample=False)  # stops at EOS
    return out[0, len(ids):].tolist()


def _stepwise(backend, ids, prompt: int, shared: bool) -> np.ndarray:
    """Log-probs after each of ``ids[prompt-1:]``: the prompt in one run, then one token per run."""
    from distillm_edge.backends.base import log_softmax

    rows = []
    if shared:
        steps = backend._shared_steps(ids[:prompt], len(ids))
        rows.append(next(steps))
        rows += [steps.send(token).copy() for token in ids[prompt:]]
    else:
        cache, step, done = backend._empty_cache(), list(ids[:prompt]), 0
        for token in [*ids[prompt:], None]:
            logits, cache = backend._run(step, cache, done)
            done += len(step)
            rows.append(logits[-1])
            step = [token]
    return log_softmax(np.stack(rows))


def _og_greedy(onnx_dir, ids, n) -> list[int]:
    import onnxruntime_genai as og

    model = og.Model(str(onnx_dir))
    params = og.GeneratorParams(model)
    # onnxruntime-genai 0.18 sizes a sliding-window layer's cache min(max_length, ...) and GQA rejects
    # a capacity below the window, so max_length must reach the window (our backend has no such limit)
    window = json.loads((onnx_dir / "genai_config.json").read_text())["model"]["decoder"]["sliding_window"]["window_size"]
    params.set_search_options(do_sample=False, max_length=max(len(ids) + n, window))  # stops at EOS
    generator = og.Generator(model, params)
    generator.append_tokens(list(ids))
    out = []
    while not generator.is_done() and len(out) < n:
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out[:n]


def test_flatten_gemma3_rope_gives_the_builder_its_flat_keys():
    import transformers as tf

    from distillm_edge.export.onnx_builder_main import flatten_gemma3_rope

    cfg = tf.Gemma3TextConfig(rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                               "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    flatten_gemma3_rope(cfg)
    assert (cfg.rope_theta, cfg.rope_local_base_freq) == (1e6, 1e4)
    assert cfg.rope_parameters == {"rope_type": "default", "rope_theta": 1e6}
    scaled = tf.Gemma3TextConfig(rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                                                  "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    with pytest.raises(ValueError, match="linear"):
        flatten_gemma3_rope(scaled)


def test_the_graph_holds_gemma3s_specifics(tiny_gemma3_onnx):
    import onnx

    model = onnx.load(str(tiny_gemma3_onnx / "model.onnx"), load_external_data=False)
    gqa = {}
    for node in model.graph.node:
        if node.op_type == "GroupQueryAttention":
            layer = int(node.name.split("layers.")[1].split("/")[0])
            gqa[layer] = ({a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}, node.input[7])
    assert [attrs["local_window_size"] for attrs, _ in gqa.values()] == [WINDOW, -1, WINDOW]
    assert [attrs.get("sliding_window_cache", 0) for attrs, _ in gqa.values()] == [1, 0, 1]
    assert [cos for _, cos in gqa.values()] == ["cos_cache_local", "cos_cache_global", "cos_cache_local"]
    assert all(attrs["scale"] == pytest.approx(24 ** -0.5) for attrs, _ in gqa.values())  # query_pre_attn_scalar
    inits = {t.name: t for t in model.graph.initializer}
    cos_local, cos_global = (onnx.numpy_helper.to_array(inits[n], base_dir=str(tiny_gemma3_onnx))
                             for n in ("cos_cache_local", "cos_cache_global"))
    inv_freq = lambda theta: 1.0 / theta ** (np.arange(0, 16, 2) / 16)  # noqa: E731
    np.testing.assert_allclose(cos_local[3], np.cos(3 * inv_freq(1e4)), atol=1e-6)
    np.testing.assert_allclose(cos_global[3], np.cos(3 * inv_freq(1e6)), atol=1e-6)
    inputs = {n.name: list(n.input) for n in model.graph.node}
    scale = inputs["/model/embed_tokens/Mul"][1]
    assert float(scale.rsplit("/", 1)[1]) == float(np.float32(np.sqrt(48)))  # not the builder's rounded 6.93
    assert inputs["/lm_head/softcap/Div"][1].endswith("/30.0")
    window = json.loads((tiny_gemma3_onnx / "genai_config.json").read_text())["model"]["decoder"]["sliding_window"]
    assert window["window_size"] == WINDOW and window["layers"] == [0, 2]


@pytest.mark.parametrize("shared", [True, False])
def test_logits_match_transformers_past_the_window(tiny_gemma3, tiny_gemma3_onnx, shared):
    from distillm_edge.backends.onnx_backend import WINDOW_SLACK, OnnxBackend

    backend = OnnxBackend(str(tiny_gemma3_onnx), threads=1, share_buffer=shared)
    assert backend.share_buffer is shared
    assert backend.window_capacity == {0: WINDOW + WINDOW_SLACK, 2: WINDOW + WINDOW_SLACK}
    ids = [int(i) for i in np.random.default_rng(0).integers(3, backend.vocab_size, 120)]
    assert len(ids) > WINDOW + WINDOW_SLACK  # the windowed buffers get compacted
    ref = _hf_logprobs(tiny_gemma3, ids)
    np.testing.assert_allclose(backend.next_token_logprobs(ids), ref, atol=TOL, rtol=0)
    prompt = 10
    np.testing.assert_allclose(_stepwise(backend, ids, prompt, shared), ref[prompt - 1:], atol=TOL, rtol=0)


def test_greedy_tokens_match_transformers_and_onnxruntime_genai(tiny_gemma3, tiny_gemma3_onnx):
    from distillm_edge.backends.onnx_backend import OnnxBackend

    backend = OnnxBackend(str(tiny_gemma3_onnx), threads=1)
    ids = backend.tokenize("Patient on warfarin asks about paracetamol and ibuprofen")
    n = 100
    ours = list(backend.stream(ids, max_new_tokens=n))
    assert len(ids) + len(ours) > 2 * WINDOW
    assert ours == _hf_greedy(tiny_gemma3, ids, n)
    assert ours == _og_greedy(tiny_gemma3_onnx, ids, n)


def test_export_run_verifies_gemma3(tmp_path, tiny_gemma3, small_parity):
    from distillm_edge.export import ExportConfig, run

    result = run(ExportConfig(model=str(tiny_gemma3), format="onnx", quant="fp32", outdir=tmp_path, threads=2))
    assert result.verified, result.failures
    p = result.manifest["parity"]
    assert p["top1_agreement"] >= 0.97 and p["mean_kl"] < 1e-4 and p["tokenizer_match"]
    assert result.manifest["source"]["architecture"] == "Gemma3ForCausalLM"


@pytest.mark.slow
def test_embedded_gemma3_270m(tmp_path_factory, gemma_dir):
    """The real Gemma-3 270M (materialized from its GGUF): 262,144-token vocab, 18 layers (every sixth
    global), window 512. A 700-token sequence: logits against transformers (whole and step by
    step past the window cache's capacity), greedy tokens against transformers and onnxruntime-genai."""
    from distillm_edge.backends.onnx_backend import OnnxBackend
    from distillm_edge.export.onnx_convert import build_onnx

    config = json.loads((gemma_dir / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"] and config["vocab_size"] == 262144
    out = tmp_path_factory.mktemp("gemma3_270m_onnx") / "onnx"
    out.mkdir()
    build_onnx(gemma_dir, out, "fp32", config["num_hidden_layers"])
    backend = OnnxBackend(str(out), threads=2)
    assert backend.share_buffer and sorted(set(range(18)) - set(backend.window_capacity)) == [5, 11, 17]  # global
    text = (gemma_dir / "config.json").read_text() * 3
    ids = backend.tokenize(text)[:700]
    assert len(ids) == 700
    ref = _hf_logprobs(gemma_dir, ids)
    whole = backend.next_token_logprobs(ids)
    assert np.abs(whole - ref).max() < 1e-3  # measured 1.5e-4
    assert (whole.argmax(-1) == ref.argmax(-1)).mean() >= 0.99
    prompt = 500
    steps = _stepwise(backend, ids, prompt, shared=True)
    assert np.abs(steps - ref[prompt - 1:]).max() < 1e-3
    prompt_ids = backend.chat_ids([{"role": "user", "content": "What is a normal adult resting heart rate?"}])
    ours = list(backend.stream(prompt_ids, max_new_tokens=40))
    assert ours == _hf_greedy(gemma_dir, prompt_ids, 40)
    assert ours == _og_greedy(out, prompt_ids, 40)


@pytest.mark.parametrize("rope", [
    {"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}},
    {"rope_scaling": {"type": "linear", "factor": 8.0}, "rope_theta": 1e6, "rope_local_base_freq": 1e4},
])
def test_scaled_rope_is_refused_before_the_builder_runs(tmp_path, rope):
    from distillm_edge.errors import UserError
    from distillm_edge.export.checkpoint import Checkpoint, check_supported

    config = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", **rope}
    with pytest.raises(UserError, match="config.json: Gemma-3 with RoPE scaling \\(linear\\)"):
        check_supported(Checkpoint(tmp_path, config, {}), "onnx")
    config.pop("rope_parameters", None), config.pop("rope_scaling", None)
    check_supported(Checkpoint(tmp_path, config, {}), "onnx")  # default RoPE: offered


def test_batched_rows_keep_the_window_when_the_context_is_shorter(tiny_gemma3_onnx):
    """serve's ``BatchDecoder`` with a per-row context below the sliding window: the local layers still get
    their window's rows (GroupQueryAttention refuses less), and batched rows equal each sequence alone."""
    from distillm_edge.backends.onnx_backend import OnnxBackend
    from distillm_edge.backends.onnx_batch import BatchDecoder

    backend = OnnxBackend(str(tiny_gemma3_onnx), threads=1)
    try:
        prompts, steps = [[5, 17, 300, 41, 9], [7, 8, 9, 1000, 23, 42, 64]], 4
        decoder = BatchDecoder(backend, 2, WINDOW - 4)
        rows = {i: [decoder.prefill(i, p)] for i, p in enumerate(prompts)}
        for _ in range(steps - 1):
            out = decoder.decode([int(rows[i][-1].argmax()) for i in range(2)])
            for i in range(2):
                rows[i].append(out[i])
        for i, p in enumerate(prompts):
            gen = backend._shared_steps(p, len(p) + steps)
            alone = [np.array(next(gen))]
            for _ in range(steps - 1):
                alone.append(np.array(gen.send(int(alone[-1].argmax()))))
            np.testing.assert_allclose(np.stack(rows[i]), np.stack(alone), atol=1e-4, err_msg=f"prompt {i}")
    finally:
        backend.close()
