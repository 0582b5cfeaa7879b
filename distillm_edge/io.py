"""Small file helpers shared by every command: atomic writes, hashing, the cache home.

Atomic writes go to a temporary file in the same directory and are renamed into place, so a
crash never leaves a half-written file under its final name. Files are created readable by the
owner and group only (0o640) and directories 0o750: model weights, data and audit logs stay local.

Test: ``pytest tests/test_io.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FILE_MODE = 0o640
DIR_MODE = 0o750


def home() -> Path:
    """The cache/state directory: ``$DISTILLM_EDGE_HOME`` or ``~/.cache/distillm-edge``."""
    env = os.environ.get("DISTILLM_EDGE_HOME")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "distillm-edge"
    return base


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    return path


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it is renamed to ``final``."""
    final = Path(final)
    ensure_dir(final.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``final``; on success it replaces ``final`` (0o750).

    An existing ``final`` is renamed aside first and removed only after the new one is in place,
    so ``final`` is never half-written and never missing for longer than a rename.
    """
    final = Path(final)
    ensure_dir(final.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)
        aside = None
        if final.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, aside / final.name)
        os.replace(tmp, final)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_dir(path: Path, patterns: tuple[str, ...] = ("*.safetensors", "*.json", "*.jinja")) -> str:
    """A stable hash of a checkpoint directory's weight/config files (names and contents)."""
    digest = hashlib.sha256()
    files = sorted({p for pat in patterns for p in Path(path).glob(pat) if p.is_file()})
    for p in files:
        digest.update(p.name.encode())
        digest.update(sha256_file(p).encode())
    return digest.hexdigest()
