"""The foundation's first feature: user clicks_5m through FeatureSet and the catalog."""

from __future__ import annotations

import orjson
import pytest

from events.contracts import SCHEMA_VERSION, Click, Prediction
from features.catalog import first_feature_catalog

T0 = 1_700_000_000_000  # a multiple of the 25 s tile
TILE = 25_000
WINDOW = 300_000


def click(ts: int, user: str = "u1", item: str = "i1") -> tuple[str, Click]:
    return "clicks", Click(user, item, ts)


def pred(ts: int, user: str = "u1", item: str = "i1") -> tuple[str, Prediction]:
    return "predictions", Prediction(f"p{ts}", "r", user, item, "m", 0.5, ts)


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], 0),
        ([click(T0)], 1),
        ([click(T0), click(T0 + 1)], 2),
        # as_of at a tile start: the window reaches back W - T to exactly T0
        ([click(T0), click(T0 + WINDOW - TILE)], 2),
        ([click(T0 - 1), click(T0 + WINDOW - TILE)], 1),
        # as_of at the last ms of that tile: same window
        ([click(T0), pred(T0 + WINDOW - 1)], 1),
        # one ms later the tile holding T0 leaves the window
        ([click(T0), pred(T0 + WINDOW)], 0),
        ([click(T0 + TILE), pred(T0 + WINDOW)], 1),
        # a late click outside the window of the current as_of is ignored
        ([pred(T0 + WINDOW), click(T0)], 0),
        ([pred(T0 + WINDOW), click(T0 + TILE)], 1),
        # predictions advance as_of but are not clicks
        ([pred(T0), pred(T0 + 1)], 0),
    ],
)
def test_clicks_5m_table(events: list[tuple[str, Click | Prediction]], expected: int) -> None:
    user = first_feature_catalog().user
    state = user.new_state()
    for source, event in events:
        user.update(state, source, event)
    assert user.values(state) == {"clicks_5m": expected}


def test_record_shape_and_as_of() -> None:
    user = first_feature_catalog().user
    state = user.new_state()
    user.update(state, *click(T0 + 5))
    user.update(state, *pred(T0 + 9))
    user.update(state, *click(T0 + 7))
    assert user.record("u1", state) == {
        "entity": "user",
        "id": "u1",
        "as_of_ts": T0 + 9,
        "schema_version": SCHEMA_VERSION,
        "features": {"clicks_5m": 2},
    }


def test_empty_state_record() -> None:
    user = first_feature_catalog().user
    assert user.record("u1", user.new_state())["features"] == {"clicks_5m": 0}
    assert user.record("u1", user.new_state())["as_of_ts"] is None


def test_state_survives_orjson_round_trip() -> None:
    user = first_feature_catalog().user
    state = user.new_state()
    for i in range(20):
        user.update(state, *click(T0 + i * 10_000))
    state = orjson.loads(orjson.dumps(state))
    user.update(state, *click(T0 + 200_000))
    assert user.values(state) == {"clicks_5m": 21}


def test_key_of_and_item_set_is_empty() -> None:
    catalog = first_feature_catalog()
    assert catalog.user.key_of("clicks", Click("u7", "i3", T0)) == "u7"
    assert catalog.item.key_of("predictions", pred(T0, item="i3")[1]) == "i3"
    state = catalog.item.new_state()
    catalog.item.update(state, *click(T0))
    assert catalog.item.record("i1", state)["features"] == {}
    assert catalog.item.record("i1", state)["as_of_ts"] == T0


def test_unknown_source_raises_value_error() -> None:
    user = first_feature_catalog().user
    with pytest.raises(ValueError):
        user.update(user.new_state(), "views", Click("u", "i", T0))
    with pytest.raises(ValueError):
        user.key_of("views", Click("u", "i", T0))


def test_state_name_is_stable() -> None:
    assert first_feature_catalog().user.state_name == first_feature_catalog().user.state_name
    assert first_feature_catalog().user.state_name.startswith("user-features-")
