"""The default catalog: feature names, value types and per-feature edge cases."""

from __future__ import annotations

import math

import pytest

from events.contracts import Click, Prediction
from events.timing import DAY_MS, HOUR_MS, MINUTE_MS
from features.catalog import Catalog, default_catalog, first_feature_catalog
from features.featureset import FeatureSet
from features.stores import DecayStore, TileStore
from tests.features.drive import values_of

T0 = 1_700_006_400_000  # a multiple of every tile size (2 h included)

USER_FEATURES = (
    "clicks_1m", "clicks_5m", "clicks_1h", "clicks_24h",
    "impressions_5m", "impressions_1h", "impressions_24h",
    "ctr_1h", "ctr_24h", "ms_since_last_click", "distinct_items_clicked_1h",
    "session_events", "session_duration_ms", "clicks_decayed_10m",
)
ITEM_FEATURES = (
    "impressions_5m", "impressions_1h", "impressions_24h",
    "clicks_5m", "clicks_1h", "clicks_24h",
    "ctr_1h", "ctr_24h", "clicks_decayed_15m", "trend_ratio",
)

Event = tuple[str, Click | Prediction]


def c(ts: int, item: str = "i1", user: str = "u1") -> Event:
    return "clicks", Click(user, item, T0 + ts)


def p(ts: int, item: str = "i1", user: str = "u1") -> Event:
    return "predictions", Prediction(f"p{ts}", "r", user, item, "m", 0.5, T0 + ts)


def run(fs: FeatureSet, events: list[Event]) -> dict[str, object]:
    return values_of(fs, events)


def test_feature_names_are_the_contract() -> None:
    catalog = default_catalog()
    assert catalog.user.names == USER_FEATURES
    assert catalog.item.names == ITEM_FEATURES
    assert first_feature_catalog().user.names == ("clicks_5m",)
    assert first_feature_catalog().item.names == ()


def test_tile_sizes() -> None:
    tiles = {s.name: s.tile_ms for s in default_catalog().user.specs if s.window_ms}
    assert tiles["clicks_1m"] == 5_000
    assert tiles["clicks_5m"] == tiles["impressions_5m"] == 25_000
    assert tiles["clicks_1h"] == tiles["ctr_1h"] == tiles["distinct_items_clicked_1h"] == 300_000
    assert tiles["clicks_24h"] == tiles["ctr_24h"] == 7_200_000


def test_windows_share_tile_stores() -> None:
    # clicks_1h, ctr_1h (clicks side) and clicks share one ring; 7 rings in all for users
    kinds = [type(store) for store in default_catalog().user.stores]
    assert kinds.count(TileStore) == 7
    assert kinds.count(DecayStore) == 1
    item_kinds = [type(store) for store in default_catalog().item.stores]
    assert item_kinds.count(TileStore) == 6
    assert item_kinds.count(DecayStore) == 2  # 15 min and 24 h, shared with trend_ratio


def test_empty_state_values_and_types() -> None:
    catalog = default_catalog()
    user = run(catalog.user, [])
    assert user == {
        "clicks_1m": 0, "clicks_5m": 0, "clicks_1h": 0, "clicks_24h": 0,
        "impressions_5m": 0, "impressions_1h": 0, "impressions_24h": 0,
        "ctr_1h": 0.05, "ctr_24h": 0.05, "ms_since_last_click": None,
        "distinct_items_clicked_1h": 0, "session_events": 0, "session_duration_ms": None,
        "clicks_decayed_10m": 0.0,
    }
    item = run(catalog.item, [])
    assert item["trend_ratio"] is None
    assert item["clicks_decayed_15m"] == 0.0


def test_value_types() -> None:
    catalog = default_catalog()
    values = run(catalog.user, [p(0), c(1_000), p(2_000)])
    for name in USER_FEATURES:
        value = values[name]
        if name.startswith(("ctr", "clicks_decayed")):
            assert type(value) is float, name
        else:
            assert type(value) is int, name


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # CTR: (clicks + 1) / (impressions + 20)
        ([p(0)], {"ctr_1h": 1 / 21, "ctr_24h": 1 / 21}),
        ([p(0), c(1)], {"ctr_1h": 2 / 21, "ctr_24h": 2 / 21}),
        ([c(0), c(1)], {"ctr_1h": 3 / 20}),  # clicks without impressions: no error
        # 1h window edge as of a tile start: [T0, T0 + 1h - 5 min] holds both
        ([p(0), c(HOUR_MS - 5 * MINUTE_MS)], {"ctr_1h": 2 / 21, "clicks_1h": 1}),
        # one tile later the impression at T0 has left the 1h window, not the 24h one
        ([p(0), c(HOUR_MS)], {"ctr_1h": 2 / 20, "ctr_24h": 2 / 21, "impressions_24h": 1}),
        # the 24h window edge
        ([p(0), c(DAY_MS - 2 * HOUR_MS)], {"impressions_24h": 1}),
        ([p(0), c(DAY_MS - 1)], {"impressions_24h": 1}),
        ([p(0), c(DAY_MS)], {"impressions_24h": 0, "clicks_24h": 1}),
        # ms_since_last_click counts from the newest click to as_of (any source)
        ([c(0)], {"ms_since_last_click": 0}),
        ([c(0), p(7_000)], {"ms_since_last_click": 7_000}),
        ([p(9_000), c(2_000), c(1_000)], {"ms_since_last_click": 7_000}),
        ([p(0)], {"ms_since_last_click": None}),
        # distinct items clicked in the 1h window
        ([c(0, "a"), c(1, "a"), c(2, "b")], {"distinct_items_clicked_1h": 2}),
        ([c(0, "a"), p(HOUR_MS), c(HOUR_MS, "b")], {"distinct_items_clicked_1h": 1}),
        ([c(0, "a"), c(HOUR_MS - 1, "b")], {"distinct_items_clicked_1h": 2}),
        ([c(HOUR_MS, "b"), c(0, "a")], {"distinct_items_clicked_1h": 1}),  # late, ignored
        ([p(0, "x")], {"distinct_items_clicked_1h": 0}),  # impressions are not clicks
        # sessions: both sources; 30 min without events ends a session
        ([p(0), c(60_000)], {"session_events": 2, "session_duration_ms": 60_000}),
        ([p(0), c(30 * MINUTE_MS - 1)], {"session_events": 2}),
        ([p(0), c(30 * MINUTE_MS)], {"session_events": 1, "session_duration_ms": 0}),
        ([p(0), p(40 * MINUTE_MS), p(20 * MINUTE_MS)], {"session_events": 3,
                                                        "session_duration_ms": 40 * MINUTE_MS}),
        # decayed clicks, 10 min half-life
        ([c(0), p(10 * MINUTE_MS)], {"clicks_decayed_10m": 0.5}),
        ([c(0), c(10 * MINUTE_MS)], {"clicks_decayed_10m": 1.5}),
        ([p(0)], {"clicks_decayed_10m": 0.0}),
        # 1m / 5m clicks at their tile boundaries (5 s and 25 s tiles)
        ([c(0), c(55_000)], {"clicks_1m": 2}),
        ([c(0), c(60_000)], {"clicks_1m": 1, "clicks_5m": 2}),
        ([c(0), c(299_999)], {"clicks_5m": 2}),
        ([c(0), c(300_000)], {"clicks_5m": 1}),
    ],
)
def test_user_features_table(events: list[Event], expected: dict[str, float | None]) -> None:
    values = run(default_catalog().user, events)
    for name, value in expected.items():
        if isinstance(value, float):
            assert values[name] == pytest.approx(value, rel=1e-12), name
        else:
            assert values[name] == value, name


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([p(0, "i1")], {"trend_ratio": None, "impressions_5m": 1}),
        # one click just now: both decayed counts are 1, ratio of rates = 24 h / 15 min
        ([c(0, "i1")], {"trend_ratio": 96.0, "clicks_decayed_15m": 1.0}),
        # 15 minutes later: short count halves, long barely moves
        ([c(0, "i1"), p(15 * MINUTE_MS, "i1")],
         {"trend_ratio": 0.5 / 2 ** (-15 / 1440) * 96, "clicks_decayed_15m": 0.5}),
        ([c(0, "i1"), c(1, "i1"), p(2, "i1")], {"clicks_5m": 2, "impressions_5m": 1,
                                                 "ctr_1h": 3 / 21}),
    ],
)
def test_item_features_table(events: list[Event], expected: dict[str, float | None]) -> None:
    values = run(default_catalog().item, events)
    for name, value in expected.items():
        if isinstance(value, float):
            assert values[name] == pytest.approx(value, rel=1e-12), name
        else:
            assert values[name] == value, name


def test_ctr_priors_are_parameters() -> None:
    values = run(default_catalog(2.0, 8.0).user, [p(0), c(1)])
    assert values["ctr_1h"] == pytest.approx((1 + 2) / (1 + 10))
    with pytest.raises(ValueError):
        default_catalog(-1.0, 19.0)


def test_trend_ratio_none_after_decay_underflow() -> None:
    values = run(default_catalog().item, [c(0), p(2_000 * DAY_MS)])
    assert values["trend_ratio"] is None
    assert values["clicks_decayed_15m"] == 0.0
    assert not math.isnan(values["ctr_24h"] or 0.0)


def test_catalog_validates_entities() -> None:
    user, item = default_catalog().user, default_catalog().item
    with pytest.raises(ValueError):
        Catalog(user=item, item=user)


def test_featureset_rejects_bad_spec_lists() -> None:
    user_specs = default_catalog().user.specs
    with pytest.raises(ValueError):
        FeatureSet("item", user_specs)  # user specs in an item set
    with pytest.raises(ValueError):
        FeatureSet("user", [user_specs[0], user_specs[0]])  # duplicate name
    with pytest.raises(ValueError):
        FeatureSet("session", [])
