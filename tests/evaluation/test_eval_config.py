"""Config validation, table-driven: every bad setting raises ValueError naming its field."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from evaluation import (
    ComparisonConfig,
    DriftConfig,
    EvalConfig,
    MetricsConfig,
    RoutingConfig,
    TriggerConfig,
)
from training import TrainerConfig

INVALID: list[tuple[type, dict[str, Any], str]] = [
    (MetricsConfig, {"tile_ms": 0}, "tile_ms must be >= 1"),
    (MetricsConfig, {"windows": (("1h", 3_600_001),)}, "is not a multiple of tile_ms"),
    (MetricsConfig, {"windows": (("all", 60_000),)}, "reserved, empty or repeated"),
    (MetricsConfig, {"windows": (("w", 60_000), ("w", 120_000))}, "reserved, empty or repeated"),
    (MetricsConfig, {"windows": ("1h",)}, "each entry must be (name, width_ms)"),
    (MetricsConfig, {"z": 0.0}, "z must be in (0.0, 10.0]"),
    (ComparisonConfig, {"alpha": 0}, "alpha must be in (0.0, 1.0]"),
    (ComparisonConfig, {"msprt_tau2": -1.0}, "msprt_tau2 must be in"),
    (RoutingConfig, {"draws": 9_999}, "draws must be >= 10000"),
    (RoutingConfig, {"floor": 1.5}, "floor must be in [0.0, 1.0]"),
    (RoutingConfig, {"seed": -1}, "seed must be >= 0"),
    (RoutingConfig, {"seed": 1.0}, "seed must be an integer"),
    (DriftConfig, {"bins": 1}, "bins must be >= 2"),
    (DriftConfig, {"epsilon": 0.0}, "epsilon must be in (0.0, 0.1]"),
    (DriftConfig, {"reference_size": 1}, "reference_size must be >= 2"),
    (DriftConfig, {"current_size": 0}, "current_size must be >= 1"),
    (DriftConfig, {"psi_threshold": float("nan")}, "psi_threshold must be a finite number"),
    (DriftConfig, {"adwin_delta": 0.0}, "adwin_delta must be in (0.0, 1.0]"),
    (TriggerConfig, {"every_ms": 0}, "every_ms must be >= 1"),
    (TriggerConfig, {"every_labels": True}, "every_labels must be an integer"),
    (TriggerConfig, {"performance": "f1"}, "performance must be one of"),
    (TriggerConfig, {"recent_labels": 1}, "recent_labels must be >= 2"),
    (TriggerConfig, {"check_every": 0}, "check_every must be >= 1"),
    (TriggerConfig, {"log_loss_margin": -0.1}, "log_loss_margin must be in"),
    (TriggerConfig, {"drift": 1}, "drift must be a bool"),
    (EvalConfig, {"dedupe_horizon_ms": -1}, "dedupe_horizon_ms must be >= 0"),
    (EvalConfig, {"routing": {}}, "routing must be a RoutingConfig"),
    (TrainerConfig, {"optimizer": "lbfgs"}, "optimizer must be one of"),
    (TrainerConfig, {"learning_rate": 0.0}, "learning_rate must be in (0.0, 10.0]"),
    (TrainerConfig, {"checkpoint_every": 0}, "checkpoint_every must be >= 1"),
    (TrainerConfig, {"recent_k": 29}, "recent_k must be >= 30"),
    (TrainerConfig, {"alpha": 0.6}, "alpha must be in (0.0, 0.5]"),
    (TrainerConfig, {"min_margin": -1.0}, "min_margin must be in [0.0, 1000.0]"),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), INVALID,
                         ids=[f"{c.__name__}-{m}" for c, _, m in INVALID])
def test_invalid_settings_raise_value_error(cls: type, kwargs: dict[str, Any],
                                            message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [MetricsConfig, ComparisonConfig, RoutingConfig, DriftConfig,
                                 TriggerConfig, EvalConfig, TrainerConfig])
def test_defaults_are_valid_and_frozen(cls: type) -> None:
    cfg = cls()
    first = dataclasses.fields(cfg)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, first, getattr(cfg, first))
    assert cls() == cfg


def test_triggers_can_all_be_disabled() -> None:
    cfg = TriggerConfig(every_ms=None, every_labels=None, performance="off", drift=False)
    assert (cfg.every_ms, cfg.every_labels) == (None, None)
