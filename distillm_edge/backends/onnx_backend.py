"""ONNX Runtime backend: runs an ONNX export directory (``distillm-edge export --format onnx``) on CPU.

The directory holds one decoder graph (``model.onnx`` + ``model.onnx.data``) with a key/value
cache (``past_key_values.N.key/value`` in, ``present.N.key/value`` out), its ``genai_config.json``
(names, head counts, EOS ids) and the Hugging Face tokenizer files and chat template, which this
backend loads with ``AutoTokenizer`` so it tokenizes exactly like the source model.

It drives the graph with plain ``onnxruntime`` (one session, so scoring and generation share the
weights): ``next_token_logprobs`` runs the whole sequence with an empty cache and returns a row per
position; ``stream`` runs the prompt once, then feeds one token at a time with the cache.
The same directory also runs unchanged on ``onnxruntime_genai`` (``og.Model(path)``), the runtime
an app would ship.

Two ways to keep the cache during ``stream``:

- **shared buffer** (what onnxruntime-genai does for the exports its builder writes): when
  ``genai_config.json`` sets ``search.past_present_share_buffer`` and every ``past_key_values.*``
  input feeds a ``GroupQueryAttention`` node, each sequence gets one zero-filled buffer per cache
  tensor, ``[1, kv_heads, capacity, head_size]``, bound through I/O binding as both the ``past``
  input and the ``present`` output, so GQA writes each new position in place. The valid length
  reaches GQA through ``attention_mask`` (``seqlens_k`` = its sum - 1, ``total_sequence_length`` =
  its width, both computed inside the graph). The Generator allocates its whole ``max_length`` up
  front; here the capacity starts at prompt + 64 and doubles when full (one copy of the valid
  prefix), never beyond prompt + ``max_new_tokens`` or the context length: a long
  ``max_new_tokens`` costs memory only when the answer is long (numpy asks for huge pages for large
  arrays, so even untouched capacity got committed: +233 MB for one 8k-token SmolLM2 buffer).
- **concatenation** (any other graph): ``present`` = ``past`` + the new positions, a fresh tensor
  each step (copies the whole cache every token).

``share_buffer=None`` (default) picks the first when the export supports it; ``False`` forces the
second (tests compare the two).

**Sliding-window layers** (Gemma-3's local layers): the builder gives their GroupQueryAttention
``sliding_window_cache=1`` (and ``genai_config.json`` lists them under ``decoder.sliding_window``).
Such a layer's past/present buffer holds a window, not the sequence: a fixed capacity ``C >=
local_window_size`` (here the window + ``WINDOW_SLACK``) that GQA compacts itself, keeping the most
recent positions at rows ``[0, L)``; it still reads the absolute length from ``attention_mask``.
So both ways above give those layers one ``C``-row buffer from the first token on (a zero-row
past is rejected), never grown or concatenated, and take the sequence length from the other
layers (or from the count of tokens run so far).

Public API::

    backend = OnnxBackend("exports/smollm2-135m-instruct-onnx-int4", threads=4)
    ids = backend.chat_ids([{"role": "user", "content": "What is a normal INR?"}])
    rows = backend.next_token_logprobs(ids)          # [len(ids), vocab] float32 log-softmax
    for token in backend.stream(ids, max_new_tokens=64):
        ...
    backend.info.dtype  # "fp32" | "int8" | "int4" (read from the graph's MatMulNBits nodes)
    backend.share_buffer  # True: stream's KV cache is updated in place (see above)
    backend.window_capacity  # {layer: rows} for sliding-window layers (Gemma-3), else {}

Several sequences in one session run: ``backends/onnx_batch.py`` (what ``serve`` uses).

Test: ``pytest tests/backends/test_onnx_backend.py`` (sliding-window layers:
``tests/export/test_onnx_gemma3.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from distillm_edge.backends.base import (
    BackendInfo,
    gather_token_logprobs,
    hf_chat_ids,
    hf_chat_text,
    hf_is_special_token,
    log_softmax,
    sample,
)
from distillm_edge.errors import UserError

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
# rows beyond the window in a sliding-window layer's cache: GQA compacts it once per this many steps
WINDOW_SLACK = 64


def _weight_dtype(model, io_type: str) -> str:
    """int4/int8 when the graph has MatMulNBits nodes (the narrowest width present: our int4 keeps the
    head and the sensitive layers 8-bit, and its first layer is one of them), else the float type."""
    widths = {next((a.i for a in node.attribute if a.name == "bits"), 4)
              for node in model.graph.node if node.op_type == "MatMulNBits"}
    if widths:
        return f"int{min(widths)}"
    return "fp16" if io_type == "tensor(float16)" else "fp32"


def _windowed_cache_inputs(model) -> dict[str, int]:
    """Graph inputs that feed a GroupQueryAttention node with ``sliding_window_cache=1`` as its past
    key or value, each with that node's ``local_window_size``: the caches that hold a window."""
    out = {}
    for node in model.graph.node:
        attrs = {a.name: a.i for a in node.attribute}
        if node.op_type == "GroupQueryAttention" and attrs.get("sliding_window_cache"):
            out.update({name: int(attrs["local_window_size"]) for name in node.input[3:5] if name})
    return out


def _gqa_cache_inputs(model) -> set[str]:
    """Graph inputs that feed a GroupQueryAttention node as its past key (input 3) or value (input 4):
    the cache tensors GQA can update in place when past and present share one buffer."""
    return {name for node in model.graph.node if node.op_type == "GroupQueryAttention"
            for name in node.input[3:5] if name}


class OnnxBackend:
    def __init__(self, spec: str, threads: int = 0, tokenizer=None, share_buffer: bool | None = None):
        import onnx
        import onnxruntime as ort

        started = time.perf_counter()
        path = Path(spec).expanduser()
        config_file = path / "genai_config.json"
        if not config_file.is_file():
            raise UserError(
                f"{path}: not an ONNX export directory (no genai_config.json). "
                "Create one with: distillm-edge export --model MODEL --format onnx"
            )
        genai_config = json.loads(config_file.read_text())
        config = genai_config["model"]
        decoder = config["decoder"]
        self.path = path
        self.num_layers = int(decoder["num_hidden_layers"])
        self.kv_heads = int(decoder["num_key_value_heads"])
        self.head_size = int(decoder["head_size"])
        self.context_length = int(config.get("context_length", 0)) or None
        self._in = decoder["inputs"]
        self._out = decoder["outputs"]

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        graph = path / decoder.get("filename", "model.onnx")
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._input_names = set(inputs)
        key0 = self._in["past_key_names"] % 0
        self._kv_dtype = _NP_TYPES[inputs[key0].type]
        self._output_names = [o.name for o in self.session.get_outputs()]
        graph_proto = onnx.load(str(graph), load_external_data=False)
        cache_names = {self._in[k] % layer for layer in range(self.num_layers)
                       for k in ("past_key_names", "past_value_names")}
        supported = (bool(genai_config.get("search", {}).get("past_present_share_buffer"))
                     and cache_names <= _gqa_cache_inputs(graph_proto)
                     and self._in.get("attention_mask") in self._input_names)
        if share_buffer and not supported:
            raise UserError(
                f"{config_file}: this export cannot share past/present KV buffers (needs "
                "search.past_present_share_buffer and GroupQueryAttention reading every past_key_values input); "
                "open it with share_buffer=None or False."
            )
        self.share_buffer = supported if share_buffer is None else bool(share_buffer)
        windows = _windowed_cache_inputs(graph_proto)
        # layer -> rows of its windowed cache (sliding-window layers only)
        self.window_capacity = {layer: windows[self._in["past_key_names"] % layer] + WINDOW_SLACK
                                for layer in range(self.num_layers) if self._in["past_key_names"] % layer in windows}
        self._full_layer = next((layer for layer in range(self.num_layers) if layer not in self.window_capacity), None)

        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer = tokenizer
        self.vocab_size = int(config["vocab_size"])
        eos = config.get("eos_token_id", tokenizer.eos_token_id)
        self.eos_token_ids = frozenset(eos if isinstance(eos, list) else [eos]) - {None}
        self.info = BackendInfo(
            backend="onnx", model=str(spec), path=str(graph), dtype=_weight_dtype(graph_proto, inputs[key0].type),
            threads=threads, load_seconds=time.perf_counter() - started,
        )

    # -- tokenizer -------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens).input_ids)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def chat_text(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return hf_chat_text(self.tokenizer, messages, add_generation_prompt)

    def chat_ids(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        return hf_chat_ids(self.tokenizer, messages, add_generation_prompt)  # = tokenize(chat_text(...), False)

    def is_special_token(self, token: int) -> bool:
        return hf_is_special_token(self.tokenizer, token)

    # -- graph -----------------------------------------------------------------------------------
    def _cache_buffer(self, layer: int, rows: int) -> np.ndarray:
        """A zero-filled cache tensor for ``layer``: ``rows`` positions, or its window capacity."""
        rows = self.window_capacity.get(layer, rows)
        return np.zeros((1, self.kv_heads, rows, self.head_size), dtype=self._kv_dtype)

    def _empty_cache(self) -> list:
        import onnxruntime as ort

        return [ort.OrtValue.ortvalue_from_numpy(self._cache_buffer(layer, 0))
                for layer in range(self.num_layers) for _ in range(2)]

    def _run(self, ids: Sequence[int], cache: list, past: int | None = None) -> tuple[np.ndarray, list]:
        """Logits [T, V] for ``ids`` following the ``past`` cached positions, and the new cache.

        ``past`` defaults to the length of a full-attention layer's cache (needed when every layer
        keeps a window). The cache stays as ONNX Runtime values bound through I/O binding, so
        decoding never copies it out to numpy and back (at a 1024-token context that moved tens of
        MB per token).
        """
        if past is None:
            if self._full_layer is None:
                raise ValueError("every layer keeps a sliding window: pass past= (the tokens run so far)")
            past = cache[2 * self._full_layer].shape()[2]
        total = past + len(ids)
        if self.context_length and total > self.context_length:
            raise UserError(f"sequence of {total} tokens exceeds the export's context length {self.context_length}.")
        binding = self.session.io_binding()
        binding.bind_cpu_input(self._in["input_ids"], np.asarray([list(ids)], dtype=np.int64))
        binding.bind_cpu_input(self._in["attention_mask"], np.ones((1, total), dtype=np.int64))
        if "position_ids" in self._input_names:
            binding.bind_cpu_input("position_ids", np.arange(past, total, dtype=np.int64)[None])
        for layer in range(self.num_layers):
            binding.bind_ortvalue_input(self._in["past_key_names"] % layer, cache[2 * layer])
            binding.bind_ortvalue_input(self._in["past_value_names"] % layer, cache[2 * layer + 1])
        for name in self._output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        outputs = dict(zip(self._output_names, binding.get_outputs(), strict=True))
        new_cache = []
        for layer in range(self.num_layers):
            new_cache += [outputs[self._out["present_key_names"] % layer], outputs[self._out["present_value_names"] % layer]]
        return outputs[self._out["logits"]].numpy()[0], new_cache

    def next_token_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        logits, _ = self._run(ids, self._empty_cache())
        return log_softmax(logits)

    def token_logprobs(self, ids: Sequence[int], start: int = 1) -> np.ndarray:
        return gather_token_logprobs(self.next_token_logprobs(ids), ids, start)

    def _shared_steps(self, ids: Sequence[int], limit: int) -> Iterator[np.ndarray]:
        """Generator protocol for the shared-buffer cache: ``send(token)`` feeds one token and gets the
        next-token logits [V]; the first ``next()`` runs the prompt ``ids``.

        The cache holds at most ``limit`` tokens: its capacity starts at ``len(ids) + 64`` and doubles
        (up to ``limit``) when a step would not fit. One binding for the whole sequence: the cache
        values are bound once per capacity (past input and present output the same OrtValue); each
        step rebinds only ``input_ids``, ``attention_mask`` (and ``position_ids`` if the graph has
        them) and, after the prompt, the logits buffer.
        """
        import onnxruntime as ort

        binding = self.session.io_binding()
        logits_name = self._out["logits"]
        # logits land in numpy buffers bound as outputs: the prompt's [1, T, V] (read without a copy
        # of all T rows), then one reused [1, 1, V] for every decode step
        prompt_logits = np.empty((1, len(ids), self.vocab_size), dtype=np.float32)
        binding.bind_ortvalue_output(logits_name, ort.OrtValue.ortvalue_from_numpy(prompt_logits))
        step_logits = np.zeros((1, 1, self.vocab_size), dtype=np.float32)
        cache, capacity = [], 0
        step, done = list(ids), 0
        while True:
            total = done + len(step)
            if self.context_length and total > self.context_length:
                raise UserError(f"sequence of {total} tokens exceeds the export's context length {self.context_length}.")
            if total > capacity:  # first step, or full: a larger buffer holding the valid prefix
                capacity = min(max(limit, total), max(2 * capacity, len(ids) + 64))
                grown = []
                for i in range(2 * self.num_layers):
                    old = cache[i] if cache else None
                    if old is not None and i // 2 in self.window_capacity:
                        grown.append(old)  # a sliding-window layer's buffer: fixed capacity, GQA compacts it
                        continue
                    grown.append(self._cache_buffer(i // 2, capacity))
                    if old is not None:
                        grown[-1][:, :, :done] = old[:, :, :done]
                cache = grown
                for layer in range(self.num_layers):
                    for i, (past, present) in enumerate((("past_key_names", "present_key_names"),
                                                         ("past_value_names", "present_value_names"))):
                        value = ort.OrtValue.ortvalue_from_numpy(cache[2 * layer + i])  # shares the array
                        binding.bind_ortvalue_input(self._in[past] % layer, value)
                        binding.bind_ortvalue_output(self._out[present] % layer, value)
                mask = np.ones((1, capacity), dtype=np.int64)
            binding.bind_cpu_input(self._in["input_ids"], np.asarray([step], dtype=np.int64))
            binding.bind_cpu_input(self._in["attention_mask"], mask[:, :total])
            if "position_ids" in self._input_names:
                binding.bind_cpu_input("position_ids", np.arange(done, total, dtype=np.int64)[None])
            self.session.run_with_iobinding(binding)
            if done:
                row = step_logits[0, -1]
            else:
                row, prompt_logits = prompt_logits[0, -1].copy(), None  # free the T rows now
                binding.bind_ortvalue_output(logits_name, ort.OrtValue.ortvalue_from_numpy(step_logits))
            done = total
            step = [(yield row)]

    def stream(self, ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
               top_p: float = 1.0) -> Iterator[int]:
        rng = np.random.default_rng(seed)
        if max_new_tokens <= 0:
            return
        if self.share_buffer:
            limit = min(len(ids) + max_new_tokens, self.context_length or len(ids) + max_new_tokens)
            steps = self._shared_steps(ids, limit)
            logits = next(steps)
            for i in range(max_new_tokens):
                token = sample(log_softmax(logits), temperature, rng, top_p)
                yield token
                if token in self.eos_token_ids or i + 1 == max_new_tokens:
                    return
                logits = steps.send(token)
            return
        cache = self._empty_cache()
        step, done = list(ids), 0
        for _ in range(max_new_tokens):
            logits, cache = self._run(step, cache, done)
            done += len(step)
            token = sample(log_softmax(logits[-1]), temperature, rng, top_p)
            yield token
            if token in self.eos_token_ids:
                return
            step = [token]

    def close(self) -> None:
        self.session = None
