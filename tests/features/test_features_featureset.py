"""FeatureSet: state names, shared stores, JSON state, the state budget."""

from __future__ import annotations

import random
from dataclasses import replace

import orjson
import pytest

from events.contracts import SCHEMA_VERSION, Click, Prediction
from events.timing import DAY_MS, HOUR_MS, tile_start
from features.catalog import default_catalog, first_feature_catalog
from features.featureset import FeatureSet
from features.spec import Count, FeatureSpec, SmoothedCtr

T0 = 1_700_000_000_000


def clicks_spec(name: str = "clicks_5m", version: int = 1, window_ms: int = 300_000,
                tile_ms: int | None = None) -> FeatureSpec:
    return FeatureSpec(name, version, "user", "clicks", window_ms, Count(), tile_ms=tile_ms)


def test_state_name_is_deterministic_and_short() -> None:
    a = FeatureSet("user", [clicks_spec()]).state_name
    assert a == FeatureSet("user", [clicks_spec()]).state_name
    assert a.startswith("user-features-") and len(a) == len("user-features-") + 8
    assert a == first_feature_catalog().user.state_name


@pytest.mark.parametrize(
    "changed",
    [
        [clicks_spec(version=2)],  # version
        [clicks_spec(window_ms=600_000)],  # window
        [clicks_spec(tile_ms=5_000)],  # tile size: a different state layout
        [clicks_spec(name="clicks_5min")],  # name
        [clicks_spec(), clicks_spec(name="clicks_1h", window_ms=HOUR_MS)],  # one more spec
        [],  # one spec fewer
    ],
)
def test_changed_definition_changes_state_name(changed: list[FeatureSpec]) -> None:
    assert FeatureSet("user", changed).state_name != FeatureSet("user", [clicks_spec()]).state_name


def test_catalog_state_names() -> None:
    catalog = default_catalog()
    assert catalog.user.state_name != catalog.item.state_name
    assert catalog.user.state_name == default_catalog().user.state_name
    assert default_catalog(2.0, 18.0).user.state_name != catalog.user.state_name
    specs = list(catalog.user.specs)
    specs[0] = replace(specs[0], version=2)
    assert FeatureSet("user", specs).state_name != catalog.user.state_name


def test_windows_of_different_lengths_share_one_ring() -> None:
    """A 1 h and a 2 h window on 5 min tiles read one 24-slot ring."""
    fs = FeatureSet("user", [
        clicks_spec("clicks_1h", window_ms=HOUR_MS),
        clicks_spec("clicks_2h", window_ms=2 * HOUR_MS, tile_ms=300_000),
        FeatureSpec("ctr_2h", 1, "user", "any", 2 * HOUR_MS, SmoothedCtr(), tile_ms=300_000),
    ])
    assert [(k.kind, k.source) for k in fs.store_keys] == [
        ("tiles", "clicks"), ("tiles", "predictions")
    ]
    rng = random.Random(7)
    state = fs.new_state()
    times: list[int] = []
    for _ in range(400):
        ts = T0 + rng.randrange(6 * HOUR_MS)
        times.append(ts)
        fs.update(state, "clicks", Click("u", "i", ts))
        as_of = max(times)
        for name, window in (("clicks_1h", HOUR_MS), ("clicks_2h", 2 * HOUR_MS)):
            lo = tile_start(as_of, 300_000) - (window - 300_000)
            assert fs.values(state)[name] == sum(1 for t in times if lo <= t <= as_of)
    assert len(state["stores"][0]) == 1 + 24


def test_full_state_round_trips_through_orjson() -> None:
    catalog = default_catalog()
    rng = random.Random(3)
    for fs in (catalog.user, catalog.item):
        live = fs.new_state()
        restored = fs.new_state()
        for i in range(300):
            ts = T0 + i * 60_000 + rng.randrange(60_000)
            source = "clicks" if rng.random() < 0.3 else "predictions"
            event: Click | Prediction = (
                Click("u", f"i{rng.randrange(9)}", ts) if source == "clicks"
                else Prediction("p", "r", "u", f"i{rng.randrange(9)}", "m", 0.5, ts)
            )
            fs.update(live, source, event)
            restored = orjson.loads(orjson.dumps(restored))  # as a changelog table would
            fs.update(restored, source, event)
            assert fs.values(restored) == fs.values(live)
        assert restored == orjson.loads(orjson.dumps(live))


def test_record() -> None:
    user = default_catalog().user
    state = user.new_state()
    user.update(state, "predictions", Prediction("p", "r", "u9", "i1", "m", 0.5, T0))
    record = user.record("u9", state)
    assert list(record) == ["entity", "id", "as_of_ts", "schema_version", "features"]
    assert record["entity"] == "user" and record["id"] == "u9"
    assert record["as_of_ts"] == T0 and record["schema_version"] == SCHEMA_VERSION
    assert record["features"]["impressions_5m"] == 1
    orjson.dumps(record)  # JSON-ready


def active_user_state(seed: int, events: int = 50) -> dict[str, object]:
    """A user with `events` events (30 % clicks) spread over the last day."""
    user = default_catalog().user
    rng = random.Random(seed)
    state = user.new_state()
    for ts in sorted(T0 + rng.randrange(DAY_MS) for _ in range(events)):
        item = f"item-{rng.randrange(1_000_000):06d}"
        if rng.random() < 0.3:
            user.update(state, "clicks", Click("user-000042", item, ts))
        else:
            user.update(state, "predictions",
                        Prediction("p", "r", "user-000042", item, "model-v3", 0.5, ts))
    return state


@pytest.mark.parametrize("seed", range(20))
def test_state_budget_of_an_active_user(seed: int) -> None:
    """Serialized state of a user with ~50 events over the last day stays <= 1 KiB."""
    assert len(orjson.dumps(active_user_state(seed))) <= 1024


def test_state_is_bounded_for_a_very_active_user() -> None:
    """Thousands of events: state is still bounded by rings, window and horizon."""
    state = active_user_state(0, events=5_000)
    # distinct item ids clicked within the last hour dominate; still only a few KiB
    assert len(orjson.dumps(state)) <= 8 * 1024
