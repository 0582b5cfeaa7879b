"""Tests for atomic writes and hashing (distillm_edge/io.py)."""

from __future__ import annotations

import hashlib
import stat

import pytest

from distillm_edge.io import atomic_path, atomic_write_json, sha256_dir, sha256_file


def test_atomic_write_replaces_and_sets_private_mode(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_json(target, {"a": 1})
    assert target.read_text().strip() == '{\n  "a": 1\n}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert list(target.parent.iterdir()) == [target]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_hashes_match_hashlib(tmp_path):
    p = tmp_path / "w.safetensors"
    p.write_bytes(b"x" * 3_000_001)
    assert sha256_file(p, chunk=4096) == hashlib.sha256(b"x" * 3_000_001).hexdigest()
    h1 = sha256_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert sha256_dir(tmp_path) != h1


def test_atomic_dir_replaces_whole_and_leaves_nothing_on_failure(tmp_path):
    from distillm_edge.io import atomic_dir

    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (final / "old.txt").read_text() == "old"
    with atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in final.iterdir()] == ["new.txt"] and (final.stat().st_mode & 0o777) == 0o750
