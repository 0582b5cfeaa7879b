"""A fake backend with planted delays, for testing the benchmark's timing without a real model.

``FakeClock`` is a manual clock; ``FakeBackend`` advances it by ``prefill_s_per_token * len(prompt)``
before the first token and by ``decode_s`` before each later one, so the expected TTFT and
tokens/s are known exactly. With ``clock=None`` it sleeps instead (for real-clock tests).

The module-level ``allocate``/``idle``/``fail_for_user``/``crash`` are child-process targets for
the memory probe tests; they live here, not in a test module, so a spawned child imports only this
light module (not pytest).
"""

from __future__ import annotations

import time

import numpy as np

from distillm_edge.backends.base import BackendInfo
from distillm_edge.bench.memory import MIB, peak_rss
from distillm_edge.errors import UserError


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeBackend:
    vocab_size = 1000
    eos_token_ids = frozenset({999})

    def __init__(self, prefill_s_per_token: float = 0.001, decode_s: float = 0.01, clock: FakeClock | None = None,
                 eos_after: int | None = None, backend: str = "gguf", path: str = "", threads: int = 2):
        self.prefill_s_per_token, self.decode_s, self.clock, self.eos_after = prefill_s_per_token, decode_s, clock, eos_after
        self.info = BackendInfo(backend=backend, model="fake", path=path, dtype="Q4_0", threads=threads, load_seconds=0.5)
        self.calls: list[tuple[list[int], int]] = []
        self.closed = False
        self.reset_perf()

    def _wait(self, seconds: float) -> None:
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            time.sleep(seconds)

    # llama.cpp-style counters of the planted work (what LlamaCppBackend.perf() returns)
    def reset_perf(self) -> None:
        self._perf = {"prompt_eval_ms": 0.0, "prompt_tokens": 0, "eval_ms": 0.0, "eval_tokens": 0, "load_ms": 0.0}

    def perf(self) -> dict:
        return dict(self._perf)

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [1 + (sum(map(ord, word)) % 900) for word in text.split()]
        return ([0] if add_special_tokens else []) + ids

    def stream(self, ids, max_new_tokens, temperature=0.0, seed=0):
        self.calls.append((list(ids), max_new_tokens))
        self._wait(self.prefill_s_per_token * len(ids))
        self._perf["prompt_eval_ms"] += 1000 * self.prefill_s_per_token * len(ids)
        self._perf["prompt_tokens"] += len(ids)
        for i in range(max_new_tokens):
            if i:
                self._wait(self.decode_s)
                self._perf["eval_ms"] += 1000 * self.decode_s
                self._perf["eval_tokens"] += 1
            if self.eos_after is not None and i == self.eos_after:
                yield 999
                return
            yield 5 + i

    def close(self) -> None:
        self.closed = True


def allocate(emit, mib: int) -> int:
    emit({"step": "allocating"})
    block = np.ones(mib * MIB, dtype=np.uint8)  # np.ones writes every page, so all of it is resident
    emit({"step": "allocated"})
    return int(block[:: 4096].sum())


def idle(emit) -> int:
    return peak_rss()


def fail_for_user(emit) -> None:
    raise UserError("model 'nope' not found")


def crash(emit) -> None:
    raise KeyError("boom")


def fake_row(model="m.gguf", backend="gguf", dtype="Q4_0", prompt=64, decode=100.0, **extra) -> dict:
    """A result row with every field the report and compare read."""
    row = {
        "model": model, "label": model, "backend": backend, "dtype": dtype, "path": model, "threads": 2,
        "prompt_tokens": prompt, "gen_tokens": 16, "warmup": 1, "load_s": 0.5, "open_s": 0.6, "repeats": 2,
        "generated": [16, 16], "ttft_ms": 50.0, "prefill_tps": 1280.0, "decode_tps": decode,
        "decode_tps_runs": [decode, decode], "latency_p50_ms": 1000 / decode, "latency_p95_ms": 1100 / decode,
        "rss_start_mib": 40.0, "rss_loaded_mib": 150.0, "peak_rss_mib": 200.0, "peak_rss_batch_mib": None,
        "file_bytes": 100 * MIB, "weight_bytes": 100 * MIB, "weight_bytes_rule": "GGUF file size",
        "batch": {}, "batch_na": "one sequence only", "llamacpp": None, "stopped_early": False,
        "roofline": {"bound_tps": 200.0, "share": decode / 200.0},
    }
    return {**row, **extra}


def fake_result(rows: list[dict], cpu: str = "Test CPU") -> dict:
    return {
        "format": 1, "command": "distillm-edge bench --model m.gguf", "started": "2026-01-01T00:00:00",
        "wall_s": 12.0, "config": {"gen_tokens": 16, "warmup": 1, "repeats": 2, "threads_used": 2},
        "machine": {"cpu": cpu, "physical_cores": 2, "logical_cores": 2, "ram_gib": 8.0, "os": "Linux",
                    "python": "3.11", "libraries": {"numpy": "2"}, "load_avg_start": [0.1], "load_avg_end": [0.2]},
        "bandwidth": {"read_gbps": 20.0, "copy_gbps": 19.0, "bound_gbps": 20.0, "threads": 2, "buffer_mib": 256,
                      "repeats": 7, "measured_at": "2026-01-01T00:00:00", "load_avg": [0.1], "cache": "bw.json",
                      "from_cache": True},
        "rows": rows,
    }


def write_weights_gguf(path, nbytes: int):
    """A real GGUF holding one f32 tensor of ``nbytes`` (the roofline reads the tensor table)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("blk.0.ffn_up.weight", np.zeros((nbytes // 4 // 256, 256), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
