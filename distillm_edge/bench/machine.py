"""What machine a benchmark ran on: CPU, cores, RAM, OS, library versions, load average.

Library versions are read from package metadata, so nothing heavy is imported. The load average
is recorded at the start and end of a run: on a shared machine it says how noisy the numbers are.

Test: ``pytest tests/bench/test_bench_run.py`` (machine info goes into every report).
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "transformers", "llama-cpp-python", "onnxruntime", "onnxruntime-genai", "numpy", "distillm-edge")


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict:
    import psutil

    return {
        "cpu": cpu_model(),
        "physical_cores": physical_cores(),
        "logical_cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def machine_key(info: dict) -> str:
    """A short key for caches of per-machine measurements (bandwidth)."""
    return f"{platform.node()}|{info['cpu']}|{info['logical_cores']} cpus|{info['ram_gib']} GiB"
