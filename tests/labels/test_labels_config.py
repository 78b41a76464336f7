"""LabelConfig validation, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from labels.config import MODES, LabelConfig

INVALID = [
    ({"window_ms": 0}, "window_ms must be > 0 ms"),
    ({"window_ms": 1.5}, "window_ms must be an integer"),
    ({"window_ms": True}, "window_ms must be an integer"),
    ({"skew_ms": -1}, "skew_ms must be >= 0 ms"),
    ({"observe_ms": 0}, "observe_ms must be > 0 ms"),
    ({"late_horizon_ms": -5}, "late_horizon_ms must be >= 0 ms"),
    ({"mode": "eventually"}, "mode must be one of"),
    ({"mode": "observe_then_correct", "window_ms": 1_000, "observe_ms": 1_000},
     "observe_ms (1000) must be < window_ms (1000)"),
    ({"provisional_examples": 1}, "provisional_examples must be a bool"),
]


@pytest.mark.parametrize(("kwargs", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_configs_raise_value_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LabelConfig(**kwargs)


VALID = [
    {},
    {"skew_ms": 0, "late_horizon_ms": 0},
    {"mode": "wait", "window_ms": 10, "observe_ms": 60_000},  # observe_ms only checked in its mode
    *({"mode": mode} for mode in MODES),
]


@pytest.mark.parametrize("kwargs", VALID)
def test_valid_configs(kwargs: dict[str, Any]) -> None:
    config = LabelConfig(**kwargs)
    with pytest.raises(AttributeError):
        config.window_ms = 5  # type: ignore[misc]
