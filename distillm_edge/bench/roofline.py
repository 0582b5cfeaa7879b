"""The memory-bandwidth roofline for decode: how close each decode speed gets to its bound.

Generating one token reads (about) every weight once, so decode speed is bounded by
``bandwidth / bytes read per token``. We report ``share = measured decode tokens/s / that bound``.

- **Bandwidth** is measured once per machine and thread count with numpy on a 256 MiB buffer
  (far beyond the CPU caches), split across the benchmark's threads (numpy releases the GIL):
  *read* = int64 sum over the buffer (bytes read / s) and *copy* = copy into a second buffer
  (bytes read + written / s, STREAM's convention); medians of 7 repeats. The bound uses the
  larger of the two, the best this machine demonstrably reaches. Cached in
  ``$DISTILLM_EDGE_HOME/bench/bandwidth.json``; delete that file to measure again.
- **Bytes per token** are the weight bytes one decode step actually reads (``weight_bytes``): every
  weight tensor once, in its stored type, except that an *untied* token embedding is only looked up,
  so it counts one row; a tied one is read whole as the LM head. For llama.cpp the tensors come
  from the GGUF's tensor table (not the file size: metadata and the vocabulary are not read per
  token); for torch the parameters (tied weights once); for ONNX Runtime the initializers, with
  an initializer only gathered from (the embedding) counted as one row. The KV cache and
  activations are not counted, so long prompts (a bigger KV cache read per step) lower the share a little.

Test: ``pytest tests/bench/test_bench_roofline.py``.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from distillm_edge.bench.machine import load_average
from distillm_edge.io import atomic_write_json, home

BUFFER_BYTES = 256 * 2**20
REPEATS = 7


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_bandwidth(threads: int, nbytes: int = BUFFER_BYTES, repeats: int = REPEATS) -> dict:
    """Measured read and copy bandwidth (GB/s, 1e9 bytes) with ``threads`` threads."""
    src = np.ones(nbytes // 8, dtype=np.int64)
    dst = np.empty_like(src)
    src_parts, dst_parts = np.array_split(src, threads), np.array_split(dst, threads)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(np.copyto, dst_parts, src_parts))  # touch every page once before timing
        read_s = _median_seconds(lambda: list(pool.map(np.sum, src_parts)), repeats)
        copy_s = _median_seconds(lambda: list(pool.map(np.copyto, dst_parts, src_parts)), repeats)
    read, copy = src.nbytes / read_s / 1e9, 2 * src.nbytes / copy_s / 1e9
    return {
        "read_gbps": read, "copy_gbps": copy, "bound_gbps": max(read, copy), "threads": threads,
        "buffer_mib": src.nbytes / 2**20, "repeats": repeats, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "load_avg": load_average(),
    }


def cached_bandwidth(threads: int, machine_key: str, cache: Path | None = None) -> dict:
    """The bandwidth for this machine and thread count, measured on first use and then cached."""
    cache = cache or home() / "bench" / "bandwidth.json"
    table = json.loads(cache.read_text()) if cache.is_file() else {}
    key = f"{machine_key}|threads={threads}"
    if key in table:
        return {**table[key], "cache": str(cache), "from_cache": True}
    table[key] = measure_bandwidth(threads)
    atomic_write_json(cache, table)
    return {**table[key], "cache": str(cache), "from_cache": False}


def roofline(decode_tps: float, bytes_per_token: int, bandwidth_gbps: float) -> dict:
    """The decode bound (tokens/s) and the share of it that ``decode_tps`` reaches."""
    if bytes_per_token <= 0 or not bandwidth_gbps > 0:
        return {"bound_tps": math.nan, "share": math.nan}
    bound = bandwidth_gbps * 1e9 / bytes_per_token
    return {"bound_tps": bound, "share": decode_tps / bound}


def path_bytes(path: Path) -> int:
    """Size of a model file, or of the weight files in a model directory (an ``.onnx`` graph counts
    with its directory, where its external weight data lives)."""
    path = Path(path)
    if path.suffix == ".onnx":
        path = path.parent
    if path.is_file():
        return path.stat().st_size
    weights = ("*.safetensors", "*.bin", "*.onnx", "*.data", "*.gguf")
    files = {p for pattern in weights for p in path.glob(pattern) if p.is_file()}
    return sum(p.stat().st_size for p in files)


def torch_parameter_bytes(model, per_token: bool = False) -> int:
    """Bytes of a torch model's parameters in their stored dtype, each storage counted once; with
    ``per_token``, an input embedding not shared with the LM head counts one row (a lookup)."""
    seen, total = set(), 0
    embedding = model.get_input_embeddings().weight if per_token else None
    head = model.get_output_embeddings() if per_token else None
    tied = embedding is not None and head is not None and head.weight.data_ptr() == embedding.data_ptr()
    for p in model.parameters():
        key = (p.data_ptr(), p.numel())
        if key not in seen:
            seen.add(key)
            nbytes = p.numel() * p.element_size()
            if embedding is not None and not tied and p.data_ptr() == embedding.data_ptr():
                nbytes //= p.shape[0]
            total += nbytes
    return total


def gguf_bytes_per_token(path: Path) -> int:
    """Bytes of a GGUF's tensors one decode step reads: all of them, but ``token_embd`` only one
    row when an ``output`` tensor exists (untied; llama.cpp uses token_embd as the head otherwise)."""
    from gguf import GGUFReader

    tensors = {t.name: t for t in GGUFReader(path).tensors}
    total = 0
    for name, t in tensors.items():
        if name == "token_embd.weight" and "output.weight" in tensors:
            total += int(t.n_bytes) // int(t.shape[-1])  # ggml shape is [n_embd, n_vocab]: one of n_vocab rows
        else:
            total += int(t.n_bytes)
    return total


_SUB_BYTE_BITS = {21: 4, 22: 4, 23: 4}  # onnx UINT4, INT4, FLOAT4E2M1


_GATHERS = ("Gather", "GatherBlockQuantized")


def onnx_initializer_bytes(path: Path, per_token: bool = False) -> int:
    """Sum of the initializer tensor sizes of an ``.onnx`` graph, or of every graph in a directory;
    with ``per_token``, an initializer used only as a Gather table (an untied embedding) counts one row.

    Sizes come from each tensor's shape and element type; external weight data is not loaded.
    """
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    path = Path(path)
    total = 0
    for graph_file in [path] if path.is_file() else sorted(path.glob("*.onnx")):
        model = onnx.load(str(graph_file), load_external_data=False)
        uses: dict[str, set[str]] = {}
        for node in model.graph.node:
            for name in node.input:
                uses.setdefault(name, set()).add(node.op_type)
        gathered = {node.input[0] for node in model.graph.node if node.op_type in _GATHERS}
        for tensor in model.graph.initializer:
            numel = math.prod(tensor.dims)
            if tensor.data_type in _SUB_BYTE_BITS:
                nbytes = math.ceil(numel * _SUB_BYTE_BITS[tensor.data_type] / 8)
            else:
                nbytes = numel * tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            if per_token and tensor.name in gathered and uses.get(tensor.name, set()) <= set(_GATHERS) and tensor.dims:
                nbytes //= tensor.dims[0]
            total += nbytes
    return total


def weight_bytes(backend) -> tuple[int, str]:
    """Bytes read per decode step for a loaded backend, and how that number was obtained."""
    info = backend.info
    if info.backend == "torch":
        return (torch_parameter_bytes(backend.model, per_token=True),
                f"torch parameter bytes ({info.dtype}, tied weights once, an untied embedding one row)")
    if info.backend == "gguf":
        return gguf_bytes_per_token(Path(info.path)), "GGUF tensor bytes (an untied token_embd one row)"
    if info.backend == "onnx":
        return (onnx_initializer_bytes(Path(info.path), per_token=True),
                "ONNX initializer bytes (a gather-only embedding one row)")
    raise ValueError(f"no weight-bytes rule for backend '{info.backend}'")
