"""Run a function in a fresh child process and report its peak resident memory.

Each benchmark job runs in its own ``multiprocessing`` *spawn* child, so one backend's libraries,
weights and allocator caches never inflate another's numbers. The child records its resident set
size when it starts (interpreter + this module) and its peak when the function returns: the
kernel's high-water mark, so no polling can miss a short spike. On Linux that is ``VmHWM`` from
``/proc/self/status``, not ``getrusage().ru_maxrss``: the latter survives fork+exec, so a spawned
child would report at least its *parent's* peak (a parent that once held 400 MB makes every
child "peak" at 400 MB); ``VmHWM`` belongs to the child's own address space.

The function is called as ``fn(emit, *args)``; ``emit(obj)`` sends a progress event to the parent,
which passes it to ``on_event``. Exceptions travel back: a :class:`UserError` is re-raised as one,
anything else as a RuntimeError carrying the child's traceback.

Test: ``pytest tests/bench/test_bench_memory.py``.
"""

from __future__ import annotations

import multiprocessing
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillm_edge.errors import UserError

MIB = 2**20


def current_rss() -> int:
    """This process's resident set size now, in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss() -> int:
    """This process's peak resident set size so far, in bytes."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS: bytes, elsewhere KiB
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass(frozen=True)
class ChildResult:
    value: Any
    start_rss: int  # bytes resident when the child began, before calling the function
    peak_rss: int  # bytes, the child's high-water mark over its whole life


def _child_main(conn, fn: Callable, args: tuple) -> None:
    start = current_rss()
    try:
        value = fn(lambda event: conn.send(("event", event)), *args)
        conn.send(("result", value, start, peak_rss()))
    except BaseException as exc:  # everything goes back to the parent, which decides
        kind = "user" if isinstance(exc, UserError) else "crash"
        conn.send((kind, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        conn.close()


def run_in_child(fn: Callable, *args, on_event: Callable[[Any], None] | None = None, what: str = "job") -> ChildResult:
    """Call ``fn(emit, *args)`` in a spawned child; ``fn`` and ``args`` must be picklable."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(child, fn, args), daemon=True)
    proc.start()
    child.close()
    try:
        while True:
            try:
                message = parent.recv()
            except EOFError:
                proc.join()
                raise RuntimeError(
                    f"the benchmark process for {what} died without a result (exit code {proc.exitcode}; "
                    "-9 usually means it ran out of memory)."
                ) from None
            if message[0] == "event":
                if on_event is not None:
                    on_event(message[1])
                continue
            if message[0] == "result":
                return ChildResult(message[1], message[2], message[3])
            if message[0] == "user":
                raise UserError(f"{what}: {message[1].split(': ', 1)[1]}")
            raise RuntimeError(f"the benchmark process for {what} failed: {message[1]}\n{message[2]}")
    finally:
        parent.close()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join()
