"""The foundation's first feature: user clicks_5m through the engine and the catalog."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from events.contracts import SCHEMA_VERSION, Click, Prediction
from features.catalog import first_feature_catalog
from features.records import RecordEncoder
from features.table import FeatureTable
from tests.features.drive import apply, columns, values_of

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
    assert values_of(first_feature_catalog().user, events) == {"clicks_5m": expected}


def record_after(entity: str, events: list[tuple[str, Click | Prediction]]) -> dict[str, object]:
    catalog = first_feature_catalog()
    fs = catalog.user if entity == "user" else catalog.item
    table = FeatureTable(fs, provenances=2)
    offsets = {"clicks": 0, "predictions": 0}
    out = apply(table, columns(fs, table, events, offsets), None)
    encoder = RecordEncoder(fs, ("clicks", "predictions"))
    ids = [table.ids[r] for r in out.rows.tolist()]
    (record,) = encoder.records(ids, out.as_of, out.values, None, 0)
    decoded: dict[str, object] = orjson.loads(record)
    return decoded


def test_record_shape_and_as_of() -> None:
    assert record_after("user", [click(T0 + 5), pred(T0 + 9), click(T0 + 7)]) == {
        "entity": "user",
        "id": "u1",
        "as_of_ts": T0 + 9,
        "schema_version": SCHEMA_VERSION,
        "features": {"clicks_5m": 2},
    }


def test_empty_state_record() -> None:
    user = first_feature_catalog().user
    table = FeatureTable(user, provenances=2)
    rows = table.rows_for(["u1"])
    (raw,) = RecordEncoder(user, ("clicks", "predictions")).records(
        ["u1"], table.as_of[rows], table.read(rows), None, 0)
    assert orjson.loads(raw)["features"] == {"clicks_5m": 0}
    assert orjson.loads(raw)["as_of_ts"] is None


def test_state_survives_a_changelog_round_trip() -> None:
    user = first_feature_catalog().user
    table = FeatureTable(user, provenances=2)
    offsets = {"clicks": 0, "predictions": 0}
    apply(table, columns(user, table, [click(T0 + i * 10_000) for i in range(20)], offsets),
          None)
    restored = FeatureTable(user, provenances=2)
    rows = np.arange(len(table), dtype=np.int64)
    restored.load(table.ids, table.encode(rows))
    apply(restored, columns(user, restored, [click(T0 + 200_000)], offsets), None)
    assert [v.to_list() for v in restored.read(restored.rows_for(["u1"]))] == [[21]]


def test_key_field_and_item_set_is_empty() -> None:
    catalog = first_feature_catalog()
    assert catalog.user.key_field == "user_id" and catalog.item.key_field == "item_id"
    record = record_after("item", [click(T0)])
    assert record["features"] == {} and record["as_of_ts"] == T0


def test_state_name_is_stable() -> None:
    assert first_feature_catalog().user.state_name == first_feature_catalog().user.state_name
    assert first_feature_catalog().user.state_name.startswith("user-features-")
