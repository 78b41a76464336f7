"""DelaySketch accuracy and merging; DelayStats snapshots."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.contracts import Click, Prediction
from labels.config import LabelConfig
from labels.delays import DelaySketch, DelayStats
from tests.labels.drive import Labels

PROPS = settings(derandomize=True, max_examples=200, deadline=None)
delays = st.lists(st.integers(0, 10**9), min_size=1, max_size=300)


def exact_lower_quantile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[math.floor(q * (len(ordered) - 1))])


@PROPS
@given(values=delays, q=st.sampled_from([0.0, 0.1, 0.5, 0.9, 0.99, 1.0]))
def test_quantiles_are_within_the_relative_error(values: list[int], q: float) -> None:
    sketch = DelaySketch(relative_error=0.01)
    for v in values:
        sketch.add(v)
    exact = exact_lower_quantile(values, q)
    got = sketch.quantile(q)
    assert got is not None
    assert abs(got - exact) <= 0.01 * exact + 1e-9


@PROPS
@given(a=delays, b=delays)
def test_merge_equals_adding_everything_to_one_sketch(a: list[int], b: list[int]) -> None:
    left, right, both = DelaySketch(), DelaySketch(), DelaySketch()
    for v in a:
        left.add(v)
        both.add(v)
    for v in b:
        right.add(v)
        both.add(v)
    left.merge(right)
    assert left.to_dict() == both.to_dict()
    restored = DelaySketch.from_dict(orjson.loads(orjson.dumps(left.to_dict())))
    assert restored.to_dict() == both.to_dict()


def test_sketch_against_numpy_on_a_skewed_distribution() -> None:
    rng = np.random.default_rng(7)
    values = rng.lognormal(mean=10.0, sigma=1.5, size=20_000).astype(int).tolist()
    sketch = DelaySketch(relative_error=0.01)
    for v in values:
        sketch.add(v)
    for q in (0.5, 0.9, 0.99):
        exact = exact_lower_quantile(values, q)
        assert abs((sketch.quantile(q) or 0.0) - exact) <= 0.01 * exact


@pytest.mark.parametrize(("relative_error", "delay", "q"), [
    (0.0, 1, 0.5), (1.0, 1, 0.5), (0.01, -1, 0.5), (0.01, 1, 1.5),
])
def test_invalid_arguments(relative_error: float, delay: int, q: float) -> None:
    with pytest.raises(ValueError):
        sketch = DelaySketch(relative_error)
        sketch.add(delay)
        sketch.quantile(q)


def test_merge_refuses_different_accuracies() -> None:
    with pytest.raises(ValueError):
        DelaySketch(0.01).merge(DelaySketch(0.02))


def test_engine_feeds_delay_stats_with_first_clicks_and_late_clicks() -> None:
    labels = Labels(LabelConfig(window_ms=10_000, skew_ms=0, late_horizon_ms=3_600_000))
    t0 = 1_700_000_000_000
    for n, model in enumerate(["a", "a", "a", "b"]):
        labels.on_prediction(Prediction(f"p{n}", f"r{n}", "u", f"i{n}", model, 0.5, t0), t0)
    labels.on_click(Click("u", "i0", t0 + 1_000, prediction_id="p0"), t0 + 1_001)
    labels.on_click(Click("u", "i0", t0 + 2_000, prediction_id="p0"), t0 + 2_001)  # extra
    labels.on_click(Click("u", "i2", t0 + 3_000), t0 + 3_001)
    labels.on_click(Click("u", "i3", t0 + 50), t0 + 51)
    labels.on_click(Click("u", "i1", t0 + 400_000), t0 + 400_001)  # late: p1 closed
    snap = labels.engine.delays.snapshot()
    assert sorted(snap) == ["a", "b"]
    a = snap["a"]
    assert (a["positives"], a["clicks"], a["share_within_window"]) == (2, 3, 2 / 3)
    assert abs(a["p50"] - 3_000) <= 30 and abs(a["p99"] - 3_000) <= 30
    assert snap["b"]["positives"] == 1 and abs(snap["b"]["p90"] - 50) <= 1
    orjson.dumps(snap)  # JSON-ready


def test_stats_merge() -> None:
    one, two = DelayStats(), DelayStats()
    one.observe("m", 100, True)
    two.observe("m", 300, False)
    two.observe("n", 5, True)
    one.merge(two)
    snap = one.snapshot()
    assert (snap["m"]["clicks"], snap["m"]["positives"], snap["n"]["clicks"]) == (2, 1, 1)
