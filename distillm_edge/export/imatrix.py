"""Importance matrices (imatrix) for llama.cpp's low-bit quantizer: compute, write, read, pass on.

llama.cpp quantizes a weight row better when it knows which input columns matter: the imatrix of a
weight ``W`` (shape out x in) is, for each input column ``j``, the mean over calibration tokens of
``x_j**2``, where ``x`` is the activation that multiplies ``W``. llama.cpp's ``llama-imatrix`` tool
collects it with a callback on every ``MUL_MAT`` of a ``blk.*`` weight; no pip package ships that
tool, so we collect the same sums with forward hooks on the PyTorch model's ``nn.Linear`` layers
(the float32 checkpoint the GGUF is written from, so the activations are the same), over
calibration text from our own built-in corpus (``distillm_edge/data/builtin/medical_qa.jsonl``).

File format, as ``llama-imatrix`` writes it and ``common/imatrix-loader.cpp`` reads it: a GGUF
with ``general.type = "imatrix"``, ``imatrix.datasets`` (string array), ``imatrix.chunk_count``
and ``imatrix.chunk_size`` (u32), and per weight two F32 tensors ``<name>.in_sum2`` (ne = [in, 1],
the summed squares) and ``<name>.counts`` (ne = [1, 1], the number of tokens). :func:`read_imatrix`
also reads the legacy ``.dat`` format, so files from ``llama-imatrix`` work too. Either way the
values handed to the quantizer are ``in_sum2 / counts`` (legacy: ``sums / ncall``), exactly as
llama.cpp's ``llama-quantize`` normalizes them.

Which text is calibration and which is held out: records of the built-in corpus whose index is a
multiple of ``HELD_OUT_EVERY`` are held out (never used for calibration), so a perplexity measured
on them is fair (``benchmarks/imatrix.py``).

Test: ``pytest tests/export/test_imatrix.py``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distillm_edge.errors import UserError

HELD_OUT_EVERY = 4  # every 4th built-in record is held out from calibration
CHUNK_TOKENS = 512  # llama-imatrix's default context per chunk
MAX_CHUNKS = 32  # 16k calibration tokens, spread evenly over the corpus (all of it is ~170k SmolLM2 tokens)
BUILTIN_DATASET = "distillm_edge/data/builtin/medical_qa.jsonl"


@dataclass
class Imatrix:
    """Summed squared activations per llama.cpp weight name, and the token count behind each."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)  # name -> float64 [in] (or float32 when read)
    counts: dict[str, int] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0

    def values(self) -> dict[str, np.ndarray]:
        """What llama.cpp's quantizer receives: mean squared activation per input column (float32)."""
        out = {}
        for name, sums in self.sums.items():
            n = self.counts.get(name, 0)
            out[name] = (sums / n if n > 0 else np.ones_like(sums)).astype(np.float32)
        return out


# --- calibration text ----------------------------------------------------------------------------

def builtin_records() -> list[dict]:
    from distillm_edge.data import builtin_corpus_path

    with open(builtin_corpus_path(), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _text(record: dict) -> str:
    return f"Question: {record['question']}\nAnswer: {record['answer']}"


def calibration_texts() -> list[str]:
    """Built-in records used for calibration (all but every ``HELD_OUT_EVERY``-th)."""
    return [_text(r) for i, r in enumerate(builtin_records()) if i % HELD_OUT_EVERY]


def held_out_texts() -> list[str]:
    """Built-in records never used for calibration (every ``HELD_OUT_EVERY``-th)."""
    return [_text(r) for i, r in enumerate(builtin_records()) if i % HELD_OUT_EVERY == 0]


def chunks(ids: list[int], size: int, bos: int | None) -> list[list[int]]:
    """Token chunks of ``size`` as llama-imatrix cuts them (a BOS first when the model adds one);
    a short last chunk is dropped, as llama-imatrix drops it (at least one chunk is kept)."""
    body = size - (bos is not None)
    out = [([bos] if bos is not None else []) + ids[i : i + body] for i in range(0, len(ids) - body + 1, body)]
    if not out:
        out = [([bos] if bos is not None else []) + ids]
    return out


# --- collection ----------------------------------------------------------------------------------

def collect(model, chunked: list[list[int]], name_of) -> Imatrix:
    """Sum ``x**2`` over tokens for the input of every ``nn.Linear`` that ``name_of(module name)``
    maps to a llama.cpp ``blk.*`` weight name; one forward pass per chunk."""
    import torch

    imatrix = Imatrix()
    hooks = []

    def hook_for(gname: str):
        def hook(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            acc = imatrix.sums.get(gname)
            sq = (x * x).sum(0).numpy()
            imatrix.sums[gname] = sq if acc is None else acc + sq
            imatrix.counts[gname] = imatrix.counts.get(gname, 0) + x.shape[0]
        return hook

    for mname, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            gname = name_of(f"{mname}.weight")
            if gname and gname.startswith("blk."):
                hooks.append(module.register_forward_pre_hook(hook_for(gname)))
    if not hooks:
        raise UserError("no linear layer of this model maps to a llama.cpp blk.* weight; cannot compute an imatrix.")
    try:
        with torch.inference_mode():
            for ids in chunked:
                model(torch.tensor([ids]))
    finally:
        for h in hooks:
            h.remove()
    imatrix.chunk_count, imatrix.chunk_size = len(chunked), max(len(c) for c in chunked)
    return imatrix


def spread(items: list, n: int) -> list:
    """``n`` items evenly spaced over ``items`` (all of them when there are at most ``n``)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)] if n > 1 else items[:1]


def compute(checkpoint: Path, texts: list[str], dataset: str = BUILTIN_DATASET,
            chunk_tokens: int = CHUNK_TOKENS, threads: int = 0, max_chunks: int = MAX_CHUNKS) -> Imatrix:
    """The imatrix of a Llama-family checkpoint over ``texts`` (joined by blank lines, cut in chunks;
    at most ``max_chunks`` of them, evenly spread, so every specialty of the corpus is seen)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillm_edge.export.gguf_convert import gguf_name

    if threads:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False).input_ids
    with_bos = tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id] and tokenizer.bos_token_id is not None
    chunked = spread(chunks(ids, min(chunk_tokens, int(model.config.max_position_embeddings)),
                            tokenizer.bos_token_id if with_bos else None), max_chunks)
    imatrix = collect(model, chunked, _safe_name(gguf_name))
    imatrix.datasets = [dataset]
    return imatrix


def _safe_name(gguf_name):
    def name_of(hf_name: str) -> str | None:
        try:
            return gguf_name(hf_name)
        except UserError:
            return None
    return name_of


# --- files ---------------------------------------------------------------------------------------

def write_imatrix(imatrix: Imatrix, path: Path) -> None:
    """Write ``imatrix`` in llama-imatrix's GGUF format (tensor names sorted, as it writes them)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="imatrix")
    writer.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)  # llama-imatrix writes no architecture
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", list(imatrix.datasets))
    writer.add_uint32("imatrix.chunk_count", int(imatrix.chunk_count))
    writer.add_uint32("imatrix.chunk_size", int(imatrix.chunk_size))
    for name in sorted(imatrix.sums):
        writer.add_tensor(f"{name}.in_sum2", np.asarray(imatrix.sums[name], dtype=np.float32).reshape(1, -1))
        writer.add_tensor(f"{name}.counts", np.array([[imatrix.counts[name]]], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_imatrix(path: Path) -> Imatrix:
    """Read an imatrix file (GGUF, or llama-imatrix's legacy ``.dat``); UserError when it is neither."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--imatrix {path}: no such file.")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"GGUF":
        return _read_gguf(path)
    return _read_legacy(path)


def _read_gguf(path: Path) -> Imatrix:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - gguf raises ValueError/struct errors/IndexError on bad files
        raise UserError(f"--imatrix {path}: not a readable GGUF imatrix ({type(exc).__name__}: {exc}).") from None
    sums, counts = {}, {}
    for t in reader.tensors:
        if t.tensor_type.name != "F32":
            raise UserError(f"--imatrix {path}: tensor {t.name} is {t.tensor_type.name}; imatrix tensors must be F32.")
        if t.name.endswith(".in_sum2"):
            sums[t.name[: -len(".in_sum2")]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
        elif t.name.endswith(".counts"):
            counts[t.name[: -len(".counts")]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
    if not sums or set(sums) != set(counts):
        raise UserError(f"--imatrix {path}: no matching <name>.in_sum2 / <name>.counts tensor pairs; "
                        "not an imatrix written by llama-imatrix or distillm-edge.")
    fields = reader.fields

    def scalar(key: str) -> int:
        return int(fields[key].contents()) if key in fields else 0

    if len({v.size for v in counts.values()} - {1}):
        raise UserError(f"--imatrix {path}: per-expert counts (MoE imatrix) are not supported.")
    datasets = list(fields["imatrix.datasets"].contents()) if "imatrix.datasets" in fields else []
    return Imatrix(sums={k: v for k, v in sums.items()}, counts={k: int(round(float(counts[k][0]))) for k in sums},
                   datasets=datasets, chunk_count=scalar("imatrix.chunk_count"),
                   chunk_size=scalar("imatrix.chunk_size"))


def _read_legacy(path: Path) -> Imatrix:
    """llama-imatrix's ``.dat``: int32 n; n x (int32 len, name, int32 ncall, int32 nval, float32[nval]
    holding mean*ncall); optional int32 chunk count and int32-length dataset name."""
    data = path.read_bytes()
    imatrix, pos = Imatrix(), 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise UserError(f"--imatrix {path}: neither a GGUF nor a complete legacy .dat imatrix "
                            f"(ends at byte {len(data)}); recompute it or pass another file.")
        out = struct.unpack_from(fmt, data, pos)
        pos += size
        return out

    (n,) = take("<i")
    if n < 1 or n > 1_000_000:
        raise UserError(f"--imatrix {path}: neither a GGUF nor a legacy .dat imatrix (entry count {n}).")
    for _ in range(n):
        (length,) = take("<i")
        if not 0 < length < 4096:
            raise UserError(f"--imatrix {path}: neither a GGUF nor a legacy .dat imatrix (name length {length}).")
        name = take(f"<{length}s")[0].decode("utf-8", "replace")
        ncall, nval = take("<ii")
        values = np.array(take(f"<{nval}f"), dtype=np.float32)
        # stored as mean * ncall, so sums / ncall is the mean: keep it as (sums, count = ncall)
        imatrix.sums[name], imatrix.counts[name] = values, ncall
    if pos + 4 <= len(data):
        (imatrix.chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (length,) = take("<i")
            if length > 0:
                imatrix.datasets.append(take(f"<{length}s")[0].decode("utf-8", "replace"))
    return imatrix


def write_legacy(imatrix: Imatrix, path: Path) -> None:
    """llama-imatrix's legacy ``.dat`` (for tests of the reader and for old llama.cpp builds)."""
    out = [struct.pack("<i", len(imatrix.sums))]
    for name in sorted(imatrix.sums):
        raw = name.encode()
        values = np.asarray(imatrix.sums[name], dtype=np.float32)
        out += [struct.pack("<i", len(raw)), raw, struct.pack("<ii", imatrix.counts[name], values.size),
                values.astype("<f4").tobytes()]
    dataset = (imatrix.datasets[0] if imatrix.datasets else "").encode()
    out += [struct.pack("<i", imatrix.chunk_count), struct.pack("<i", len(dataset)), dataset]
    Path(path).write_bytes(b"".join(out))
