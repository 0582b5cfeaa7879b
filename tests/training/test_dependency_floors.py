"""Every lower bound in pyproject.toml is a version this environment actually tests.

The trainer passes a boolean mask as ``logits_to_keep``, which only recent transformers accept; a floor such as
``transformers>=5.0`` promised versions nobody ran. The floors were set to the versions installed and tested when
they were written. Rule checked here: every requirement (runtime and dev) has a lower bound and the installed
version satisfies it. (A fresh install may bring a newer minor release than the floor; requiring the floor's
major.minor would turn every upstream release into a red CI, so that is not asserted.)

Run: ``pytest tests/training/test_dependency_floors.py``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def requirements() -> list[Requirement]:
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    specs = list(data["dependencies"]) + [s for group in data.get("optional-dependencies", {}).values() for s in group]
    return [Requirement(s) for s in specs]


def test_every_requirement_has_a_floor_that_the_install_meets():
    wrong = []
    for req in requirements():
        floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
        if not floors:
            wrong.append(f"{req}: no lower bound")
            continue
        try:
            installed = Version(version(req.name))
        except PackageNotFoundError:
            wrong.append(f"{req}: not installed here, so not tested")
            continue
        floor = floors[0]
        if installed < floor:
            wrong.append(f"{req}: tested with {installed}")
    assert not wrong, "set these floors to the tested versions:\n" + "\n".join(wrong)
