"""Tests for the strict config loader (distillm_edge/config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from distillm_edge.config import ConfigError, deep_merge, from_mapping, load_yaml, parse_overrides, to_dict


@dataclass(frozen=True)
class Inner:
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class Outer:
    steps: int = 10
    lr: float = 1e-3
    use_bf16: bool = False
    layers: tuple[int, ...] = ()
    teachers: tuple[Inner, ...] = ()
    weights: dict[str, float] = field(default_factory=dict)
    mode: str | None = None

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError("steps must be >= 0")


def test_builds_nested_dataclasses_and_coerces_types():
    cfg = from_mapping(Outer, {"steps": "5", "lr": "2e-5", "use_bf16": "yes", "layers": "0,1,29",
                               "teachers": [{"name": "a", "weight": 0.6}, {"name": "b"}],
                               "weights": {"cardiology": 1.2}})
    assert cfg.steps == 5 and cfg.lr == 2e-5 and cfg.use_bf16 is True
    assert cfg.layers == (0, 1, 29)
    assert cfg.teachers == (Inner("a", 0.6), Inner("b", 1.0))
    assert cfg.weights == {"cardiology": 1.2}
    assert to_dict(cfg)["teachers"][0] == {"name": "a", "weight": 0.6}


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown key 'stpes'.*Did you mean 'steps'"):
        from_mapping(Outer, {"stpes": 3})


def test_nested_unknown_key_names_the_path():
    with pytest.raises(ConfigError, match=r"config.teachers\[0\]: unknown key 'wieght'"):
        from_mapping(Outer, {"teachers": [{"name": "a", "wieght": 1}]})


@pytest.mark.parametrize("data", [{"steps": 1.5}, {"steps": True}, {"lr": "fast"}, {"use_bf16": "maybe"}])
def test_bad_types_are_errors(data):
    with pytest.raises(ConfigError, match=list(data)[0]):
        from_mapping(Outer, data)


def test_post_init_errors_become_config_errors():
    with pytest.raises(ConfigError, match="steps must be >= 0"):
        from_mapping(Outer, {"steps": -1})


def test_overrides_and_merge():
    over = parse_overrides(["steps=3", "optim.lr=1e-4", "name=med"])
    assert over == {"steps": 3, "optim": {"lr": 1e-4}, "name": "med"}
    merged = deep_merge({"optim": {"lr": 1, "wd": 0.1}, "steps": 1}, over)
    assert merged == {"optim": {"lr": 1e-4, "wd": 0.1}, "steps": 3, "name": "med"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["steps"])


def test_yaml_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 1\nlr: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(tmp_path / "list.yaml")
