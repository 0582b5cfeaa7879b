"""ONNX Runtime GenAI's model builder, run with the Gemma-3 fixes its 0.18 release needs.

``onnx_convert.build_onnx`` runs this module in a subprocess instead of
``python -m onnxruntime_genai.models.builder`` (same command-line options). It calls the builder's
own ``get_args`` / ``parse_extra_options`` / ``create_model`` (what the builder's ``__main__``
does) after two fixes, both applied to the builder's view of the model only: the checkpoint on
disk, and the PyTorch model the builder loads from it to read the weights, are left as they are.

- **RoPE in the flat form the builder reads.** transformers 5 loads Gemma-3's RoPE as
  ``rope_parameters = {"full_attention": {...}, "sliding_attention": {...}}`` (also when
  ``config.json`` holds the old flat keys), and the builder's ``Gemma3Model`` reads transformers
  4's ``rope_theta`` (global layers) and ``rope_local_base_freq`` (sliding-window layers) and a
  flat ``rope_parameters["rope_type"]`` (KeyError 'rope_type' otherwise). ``flatten_gemma3_rope``
  sets those on the config object the builder gets. Only the default RoPE is accepted on both
  layer types: the builder would apply a scaled global RoPE (Gemma-3 4B+'s linear factor 8) to the
  local layers' cos/sin cache too.
- **Embedding scale.** Gemma multiplies the embeddings by sqrt(hidden_size) (in the weights'
  dtype); the builder rounds it to 2 decimals (sqrt(640) = 25.2982 -> 25.3, a 7e-5 relative error
  on every residual stream). The fix gives it the float32 value, as transformers computes it.

Run: ``python -m distillm_edge.export.onnx_builder_main -i CKPT -o OUT -p fp32 -e cpu -c CACHE``.
Test: ``pytest tests/export/test_onnx_gemma3.py``.
"""

from __future__ import annotations

import numpy as np


def flatten_gemma3_rope(config) -> None:
    """Give a transformers 5 Gemma-3 text config the flat RoPE attributes the builder reads (in place)."""
    if getattr(config, "model_type", None) not in ("gemma3_text", "gemma3"):
        return
    text = getattr(config, "text_config", None) or config
    params = getattr(text, "rope_parameters", None) or {}
    if "full_attention" not in params:  # already flat (transformers 4)
        return
    full, local = params["full_attention"], params.get("sliding_attention", params["full_attention"])
    for name, p in (("full_attention", full), ("sliding_attention", local)):
        if p.get("rope_type", "default") != "default":
            raise ValueError(
                f"Gemma-3 {name} layers use RoPE type '{p.get('rope_type')}'; the ONNX export handles the default "
                "RoPE only (onnxruntime-genai's builder would apply the scaling to the sliding-window layers too)."
            )
    flat = {"rope_type": "default", "rope_theta": float(full["rope_theta"])}
    for cfg in {id(config): config, id(text): text}.values():
        cfg.rope_parameters = dict(flat)
        cfg.rope_theta = float(full["rope_theta"])
        cfg.rope_local_base_freq = float(local["rope_theta"])


def main() -> None:
    import onnxruntime_genai.models.builder as builder

    get_hf_details = builder.get_hf_details

    def hf_details_flat_rope(*args, **kwargs):
        details = get_hf_details(*args, **kwargs)
        flatten_gemma3_rope(details["hf_config"])
        return details

    builder.get_hf_details = hf_details_flat_rope

    gemma3_init = builder.Gemma3Model.__init__  # the class the builder uses (its 'builders' top-level package)

    def init_exact_embedding_scale(self, config, *args, **kwargs):
        gemma3_init(self, config, *args, **kwargs)
        self.embed_attrs["scale"] = float(np.float32(np.sqrt(self.hidden_size)))

    builder.Gemma3Model.__init__ = init_exact_embedding_scale

    # the builder's own __main__ (onnxruntime-genai 0.18.0)
    args = builder.get_args()
    extra_options = builder.parse_extra_options(
        args.model_name, args.input, args.output, args.precision, args.execution_provider, args.cache_dir,
        args.extra_options, builder_config_version=args.builder_config_version, target_options=args.target_options,
        drafter_options=args.drafter_options, speculative_options=args.speculative_options,
        runtime_config=args.runtime_config, search=args.search,
    )
    builder.create_model(args.model_name, args.input, args.output, args.precision, args.execution_provider,
                         args.cache_dir, **extra_options)


if __name__ == "__main__":
    main()
