"""FeatureSet and FeatureTable: state names, shared stores, changelog rows, the budget."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import orjson
import pytest

from events.contracts import SCHEMA_VERSION, Click, Prediction
from events.timing import DAY_MS, HOUR_MS, tile_start
from features.catalog import default_catalog, first_feature_catalog
from features.featureset import FeatureSet
from features.records import RecordEncoder
from features.spec import Count, FeatureSpec, SmoothedCtr
from features.stores import TileStore
from features.table import FeatureTable
from tests.features.drive import Event, apply, columns, final_values, run

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
    assert fs.stores == (TileStore("clicks", 300_000, 24), TileStore("predictions", 300_000, 24))
    rng = random.Random(7)
    events: list[Event] = [("clicks", Click("u", "i", T0 + rng.randrange(6 * HOUR_MS)))
                           for _ in range(400)]
    _, at_events = run(fs, events, sizes=[1, 7, 40], points=True)
    times: list[int] = []
    for (_, event), values in zip(events, at_events, strict=True):
        times.append(event.ts)
        as_of = max(times)
        for name, window in (("clicks_1h", HOUR_MS), ("clicks_2h", 2 * HOUR_MS)):
            lo = tile_start(as_of, 300_000) - (window - 300_000)
            assert values[name] == sum(1 for t in times if lo <= t <= as_of)


def random_log(rng: random.Random, n: int, users: int = 1) -> list[Event]:
    out: list[Event] = []
    for i in range(n):
        ts = T0 + i * 60_000 + rng.randrange(60_000)
        user = f"u{rng.randrange(users)}"
        item = f"i{rng.randrange(9)}"
        if rng.random() < 0.3:
            out.append(("clicks", Click(user, item, ts)))
        else:
            out.append(("predictions", Prediction("p", "r", user, item, "m", 0.5, ts)))
    return out


def test_state_round_trips_through_changelog_rows() -> None:
    """A table restored from its encoded rows after every batch ends where the live one does."""
    catalog = default_catalog()
    rng = random.Random(3)
    for fs in (catalog.user, catalog.item):
        log = random_log(rng, 300, users=4)
        live = FeatureTable(fs, provenances=2)
        restored = FeatureTable(fs, provenances=2)
        offsets_live = {"clicks": 0, "predictions": 0}
        offsets_restored = {"clicks": 0, "predictions": 0}
        for start in range(0, len(log), 25):
            batch = log[start:start + 25]
            apply(live, columns(fs, live, batch, offsets_live), None)
            rows = np.arange(len(restored), dtype=np.int64)
            again = FeatureTable(fs, provenances=2)
            again.load(restored.ids, restored.encode(rows))  # as a restart would
            restored = again
            apply(restored, columns(fs, restored, batch, offsets_restored), None)
            assert final_values(fs, restored) == final_values(fs, live)
        rows = np.arange(len(live), dtype=np.int64)
        assert restored.encode(rows) == live.encode(rows)


def test_redelivered_records_are_skipped_by_offset() -> None:
    fs = default_catalog().user
    table = FeatureTable(fs, provenances=2)
    log = random_log(random.Random(5), 40)
    cols = columns(fs, table, log, {"clicks": 0, "predictions": 0})
    apply(table, cols, None)
    before = final_values(fs, table)
    again = apply(table, cols, None)  # the same offsets once more
    assert again.duplicates == len(log) and final_values(fs, table) == before


def test_record() -> None:
    user = default_catalog().user
    table = FeatureTable(user, provenances=2)
    event: Event = ("predictions", Prediction("p", "r", "u9", "i1", "m", 0.5, T0))
    out = apply(table, columns(user, table, [event], {"clicks": 0, "predictions": 0}), None)
    (raw,) = RecordEncoder(user, ("clicks", "predictions")).records(
        ["u9"], out.as_of, out.values, out.prov, 2)
    record = orjson.loads(raw)
    assert list(record) == ["entity", "id", "as_of_ts", "schema_version", "features", "source"]
    assert record["entity"] == "user" and record["id"] == "u9"
    assert record["as_of_ts"] == T0 and record["schema_version"] == SCHEMA_VERSION
    assert record["features"]["impressions_5m"] == 1
    assert record["source"] == {"partition": 2, "predictions": 0}


def active_user_row(seed: int, events: int = 50) -> bytes:
    """The changelog row of a user with `events` events (30 % clicks) over the last day."""
    user = default_catalog().user
    rng = random.Random(seed)
    log: list[Event] = []
    for ts in sorted(T0 + rng.randrange(DAY_MS) for _ in range(events)):
        item = f"item-{rng.randrange(1_000_000):06d}"
        if rng.random() < 0.3:
            log.append(("clicks", Click("user-000042", item, ts)))
        else:
            log.append(("predictions",
                        Prediction("p", "r", "user-000042", item, "model-v3", 0.5, ts)))
    table = FeatureTable(user, provenances=2)
    apply(table, columns(user, table, log, {"clicks": 0, "predictions": 0}), None)
    (row,) = table.encode(np.zeros(1, dtype=np.int64))
    return row


@pytest.mark.parametrize("seed", range(20))
def test_state_budget_of_an_active_user(seed: int) -> None:
    """The stored state of a user with ~50 events over the last day stays <= 512 B."""
    assert len(active_user_row(seed)) <= 512


def test_state_is_bounded_for_a_very_active_user() -> None:
    """Thousands of events: state is still bounded by rings, window and horizon."""
    # distinct item ids clicked within the last hour dominate; still only a few KiB
    assert len(active_user_row(0, events=5_000)) <= 8 * 1024
