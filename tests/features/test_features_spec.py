"""FeatureSpec and aggregation specs: validation, derived tiles, state keys."""

from __future__ import annotations

from typing import Any

import pytest

from features.spec import (
    Count,
    DecayedCount,
    DistinctCount,
    FeatureSpec,
    SessionDuration,
    SessionEvents,
    SmoothedCtr,
    TimeSinceLast,
    TrendRatio,
)


@pytest.mark.parametrize(
    ("window_ms", "tile_ms", "expected_tile", "expected_n"),
    [
        (60_000, None, 5_000, 12),  # 1m -> 5 s
        (300_000, None, 25_000, 12),  # 5m -> 25 s
        (3_600_000, None, 300_000, 12),  # 1h -> 5 min
        (86_400_000, None, 7_200_000, 12),  # 24h -> 2 h
        (60_000, 1_000, 1_000, 60),  # finer tiles are allowed
        (3_600_000, 60_000, 60_000, 60),
    ],
)
def test_tile_derivation(
    window_ms: int, tile_ms: int | None, expected_tile: int, expected_n: int
) -> None:
    spec = FeatureSpec("f", 1, "user", "clicks", window_ms, Count(), tile_ms=tile_ms)
    assert (spec.tile_ms, spec.n_tiles) == (expected_tile, expected_n)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "Clicks"},
        {"name": "clicks-5m"},
        {"name": 5},
        {"version": 0},
        {"version": True},
        {"version": "1"},
        {"entity": "session"},
        {"source": "views"},
        {"source": "any", "aggregation": SmoothedCtr(), "window_ms": None},
        {"window_ms": None},  # windowed aggregation without a window
        {"window_ms": 0},
        {"window_ms": -300_000},
        {"window_ms": 300_001},  # not a multiple of 12, no tile given
        {"tile_ms": 50_000},  # more than window / 12
        {"tile_ms": 7_000},  # does not divide the window
        {"tile_ms": 0},
        {"tile_ms": 100},  # 3000 tiles: too many
        {"aggregation": "count"},
        {"aggregation": SmoothedCtr()},  # CTR reads both sources: source must be "any"
        {"aggregation": TimeSinceLast()},  # unwindowed aggregation with a window
        {"aggregation": TimeSinceLast(), "window_ms": None, "tile_ms": 5_000},
    ],
)
def test_invalid_specs_raise_value_error(kwargs: dict[str, Any]) -> None:
    base: dict[str, Any] = {
        "name": "clicks_5m",
        "version": 1,
        "entity": "user",
        "source": "clicks",
        "window_ms": 300_000,
        "aggregation": Count(),
    }
    with pytest.raises(ValueError):
        FeatureSpec(**(base | kwargs))


@pytest.mark.parametrize(
    "make",
    [
        lambda: SmoothedCtr(-1, 19),
        lambda: SmoothedCtr(1, float("nan")),
        lambda: SmoothedCtr(1, float("inf")),
        lambda: SmoothedCtr(0, 0),
        lambda: SmoothedCtr(True, 1),
        lambda: DistinctCount("model_id"),
        lambda: SessionEvents(gap_ms=0),
        lambda: SessionDuration(horizon_ms=-1),
        lambda: DecayedCount(0),
        lambda: DecayedCount(1.5),
        lambda: TrendRatio(900_000, 900_000),
        lambda: TrendRatio(86_400_000, 900_000),
        lambda: TrendRatio(0, 900_000),
    ],
)
def test_invalid_aggregations_raise_value_error(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


def test_ctr_priors_are_normalised_to_float() -> None:
    assert SmoothedCtr(1, 19) == SmoothedCtr(1.0, 19.0)
    assert repr(SmoothedCtr(1, 19)) == repr(SmoothedCtr(1.0, 19.0))


@pytest.mark.parametrize(
    ("spec", "state_key"),
    [
        (FeatureSpec("clicks_5m", 1, "user", "clicks", 300_000, Count()), "clicks_5m@v1/300000"),
        (FeatureSpec("clicks_5m", 2, "user", "clicks", 300_000, Count()), "clicks_5m@v2/300000"),
        (FeatureSpec("c", 1, "item", "clicks", None, DecayedCount(60_000)), "c@v1"),
    ],
)
def test_state_key(spec: FeatureSpec, state_key: str) -> None:
    assert spec.state_key == state_key


def test_specs_are_frozen_and_hashable() -> None:
    spec = FeatureSpec("clicks_5m", 1, "user", "clicks", 300_000, Count())
    with pytest.raises(AttributeError):
        spec.version = 2  # type: ignore[misc]
    assert spec == FeatureSpec("clicks_5m", 1, "user", "clicks", 300_000, Count())
    assert len({spec, FeatureSpec("clicks_5m", 1, "user", "clicks", 300_000, Count())}) == 1


def test_fingerprint_covers_the_whole_definition() -> None:
    base = FeatureSpec("f", 1, "user", "any", 3_600_000, SmoothedCtr())
    variants = [
        FeatureSpec("f", 1, "user", "any", 3_600_000, SmoothedCtr(2, 18)),
        FeatureSpec("f", 1, "user", "any", 3_600_000, SmoothedCtr(), tile_ms=60_000),
        FeatureSpec("f", 1, "item", "any", 3_600_000, SmoothedCtr()),
    ]
    assert len({base.fingerprint, *(v.fingerprint for v in variants)}) == 4
