"""The columnar feature engine against a brute-force oracle, plus order-independence
and batch-independence properties.

The oracle recomputes every feature from the raw event list with the formulas of
the ``features`` package docstring; it shares no code with the engine. The engine
runs the events in batches of random sizes (one event per batch included), which
must never change a value.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.contracts import Click, Prediction
from events.timing import DAY_MS, HOUR_MS, MINUTE_MS, tile_start
from features.catalog import default_catalog
from features.featureset import FeatureSet
from features.spec import SessionDuration, SessionEvents
from features.table import FeatureTable
from tests.features.drive import run

T0 = 1_700_000_000_000
GAP = 30 * MINUTE_MS
Event = tuple[str, Click | Prediction]
WINDOWS = {"1m": (MINUTE_MS, 5_000), "5m": (5 * MINUTE_MS, 25_000),
           "1h": (HOUR_MS, 300_000), "24h": (DAY_MS, 7_200_000)}


def in_window(ts: int, as_of: int, window: str) -> bool:
    length, tile = WINDOWS[window]
    return tile_start(as_of, tile) - (length - tile) <= ts <= as_of


def decayed(times: list[int], as_of: int, half_life: int) -> float:
    return sum(2.0 ** (-(as_of - ts) / half_life) for ts in times)


def oracle(entity: str, events: list[Event], a: float = 1.0, b: float = 19.0) -> dict[str, object]:
    """Every default-catalog feature of one entity, from its raw events."""
    t = max(e.ts for _, e in events)
    clicks = [e for s, e in events if s == "clicks"]
    imps = [e for s, e in events if s == "predictions"]

    def count(evs: list[Click] | list[Prediction], w: str) -> int:
        return sum(1 for e in evs if in_window(e.ts, t, w))

    out: dict[str, object] = {}
    if entity == "user":
        for w in ("1m", "5m", "1h", "24h"):
            out[f"clicks_{w}"] = count(clicks, w)
    for w in ("5m", "1h", "24h"):
        out[f"impressions_{w}"] = count(imps, w)
    if entity == "item":
        for w in ("5m", "1h", "24h"):
            out[f"clicks_{w}"] = count(clicks, w)
    for w in ("1h", "24h"):
        out[f"ctr_{w}"] = (count(clicks, w) + a) / (count(imps, w) + a + b)
    if entity == "user":
        out["ms_since_last_click"] = t - max(e.ts for e in clicks) if clicks else None
        out["distinct_items_clicked_1h"] = len(
            {e.item_id for e in clicks if in_window(e.ts, t, "1h")}
        )
        times = sorted(e.ts for _, e in events)
        start = len(times) - 1
        while start > 0 and times[start] - times[start - 1] < GAP:
            start -= 1
        out["session_events"] = len(times) - start
        out["session_duration_ms"] = times[-1] - times[start]
        out["clicks_decayed_10m"] = decayed([e.ts for e in clicks], t, 10 * MINUTE_MS)
    else:
        short = decayed([e.ts for e in clicks], t, 15 * MINUTE_MS)
        long = decayed([e.ts for e in clicks], t, DAY_MS)
        out["clicks_decayed_15m"] = short
        out["trend_ratio"] = None if long == 0 else (short / 15 / MINUTE_MS) / (long / DAY_MS)
    return out


def engine(fs: FeatureSet, events: list[Event],
           sizes: list[int] | None = None) -> dict[str, dict[str, object]]:
    """Final values per entity key after applying the events in the given order."""
    return run(fs, events, sizes)[0]


BATCHES = st.lists(st.integers(1, 12), min_size=1, max_size=4)


def assert_close(actual: dict[str, object], expected: dict[str, object]) -> None:
    assert actual.keys() == expected.keys()
    for name, want in expected.items():
        got = actual[name]
        if isinstance(want, float):
            assert isinstance(got, float), name
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-300), (name, got, want)
        else:
            assert got == want, (name, got, want)


# Offsets that land on and next to tile and window boundaries.
EDGES = [0, 1, 4_999, 5_000, 25_000, 59_999, 60_000, 299_999, 300_000, 1_799_999,
         1_800_000, 3_300_000, 3_600_000, 7_200_000, 79_200_000, 86_400_000]


@st.composite
def logs(draw: st.DrawFn, max_lateness: int) -> list[Event]:
    """A log of events with increasing base times; each may arrive up to max_lateness late."""
    n = draw(st.integers(min_value=1, max_value=40))
    base = T0
    out: list[Event] = []
    for _ in range(n):
        base += draw(st.one_of(st.sampled_from(EDGES),
                               st.integers(min_value=0, max_value=HOUR_MS)))
        ts = base - draw(st.one_of(st.just(0), st.integers(min_value=0, max_value=max_lateness)))
        user = draw(st.sampled_from(["u1", "u2"]))
        item = draw(st.sampled_from(["i1", "i2", "i3"]))
        if draw(st.booleans()):
            out.append(("clicks", Click(user, item, ts)))
        else:
            out.append(("predictions", Prediction("p", "r", user, item, "m", 0.5, ts)))
    return out


def oracle_all(entity: str, events: list[Event]) -> dict[str, dict[str, object]]:
    field = "user_id" if entity == "user" else "item_id"
    keys = {getattr(e, field) for _, e in events}
    return {k: oracle(entity, [(s, e) for s, e in events if getattr(e, field) == k])
            for k in keys}


@settings(derandomize=True, max_examples=300, deadline=None)
@given(events=logs(max_lateness=HOUR_MS), sizes=st.one_of(st.none(), BATCHES))
def test_engine_matches_oracle(events: list[Event], sizes: list[int] | None) -> None:
    """Default catalog, events up to 1 h late (the sessions' default horizon)."""
    catalog = default_catalog()
    for fs in (catalog.user, catalog.item):
        actual = engine(fs, events, sizes)
        expected = oracle_all(fs.entity, events)
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_close(actual[key], expected[key])


def long_horizon_user_set() -> FeatureSet:
    """The default user features with sessions that accept events up to 10 days late."""
    specs = []
    for spec in default_catalog().user.specs:
        if isinstance(spec.aggregation, SessionEvents):
            spec = replace(spec, aggregation=SessionEvents(horizon_ms=10 * DAY_MS))
        elif isinstance(spec.aggregation, SessionDuration):
            spec = replace(spec, aggregation=SessionDuration(horizon_ms=10 * DAY_MS))
        specs.append(spec)
    return FeatureSet("user", specs)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(events=logs(max_lateness=0), data=st.data())
def test_shuffling_changes_no_final_value(events: list[Event], data: st.DataObject) -> None:
    """Any permutation of a multi-day log gives the oracle's values, for every feature."""
    shuffled = data.draw(st.permutations(events))
    sizes = data.draw(st.one_of(st.none(), BATCHES))
    fs_user = long_horizon_user_set()
    for fs in (fs_user, default_catalog().item):
        expected = oracle_all(fs.entity, events)
        for order in (events, shuffled):
            actual = engine(fs, order, sizes)
            for key in expected:
                assert_close(actual[key], expected[key])


@settings(derandomize=True, max_examples=200, deadline=None)
@given(events=logs(max_lateness=0), data=st.data())
def test_default_catalog_shuffle_outside_sessions(
    events: list[Event], data: st.DataObject
) -> None:
    """With the default 1 h session horizon, every non-session value is order independent."""
    shuffled = data.draw(st.permutations(events))
    user = default_catalog().user
    a, b = engine(user, events), engine(user, shuffled)
    for key in a:
        for name in ("session_events", "session_duration_ms"):
            del a[key][name], b[key][name]
        assert_close(b[key], a[key])


@settings(derandomize=True, max_examples=200, deadline=None)
@given(events=logs(max_lateness=2 * HOUR_MS), sizes=BATCHES)
def test_as_of_never_decreases(events: list[Event], sizes: list[int]) -> None:
    """Each point read's and each touched key's as-of is the max ts of its events so far."""
    from tests.features.drive import apply, columns, split

    catalog = default_catalog()
    for fs in (catalog.user, catalog.item):
        table = FeatureTable(fs, provenances=2)
        offsets = {"clicks": 0, "predictions": 0}
        newest: dict[str, int] = {}
        for batch in split(events, sizes):
            cols = columns(fs, table, batch, offsets)
            out = apply(table, cols, np.ones(len(batch), dtype=np.bool_))
            for i, (_, event) in enumerate(batch):
                key = getattr(event, fs.key_field)
                newest[key] = max(newest.get(key, event.ts), event.ts)
                assert out.point_as_of[i] == newest[key]
            for row, as_of in zip(out.rows.tolist(), out.as_of.tolist(), strict=True):
                assert as_of == newest[table.ids[row]]


@pytest.mark.parametrize("seed", range(5))
def test_random_long_logs_match_oracle(seed: int) -> None:
    """Larger seeded logs (thousands of events, 3 days, 1 h lateness) against the oracle."""
    rng = random.Random(seed)
    events: list[Event] = []
    base = T0
    for _ in range(3_000):
        base += rng.choice([0, 1, 1_000, 5_000, 25_000, 60_000, 300_000]) + rng.randrange(90_000)
        ts = base - (rng.randrange(HOUR_MS) if rng.random() < 0.2 else 0)
        user, item = f"u{rng.randrange(5)}", f"i{rng.randrange(8)}"
        if rng.random() < 0.3:
            events.append(("clicks", Click(user, item, ts)))
        else:
            events.append(("predictions", Prediction("p", "r", user, item, "m", 0.5, ts)))
    catalog = default_catalog()
    for fs in (catalog.user, catalog.item):
        actual = engine(fs, events, [rng.randrange(1, 400) for _ in range(8)])
        expected = oracle_all(fs.entity, events)
        for key in expected:
            assert_close(actual[key], expected[key])


@settings(derandomize=True, max_examples=300, deadline=None)
@given(events=logs(max_lateness=HOUR_MS), sizes=st.one_of(st.none(), BATCHES))
def test_point_in_time_values_match_the_oracle(events: list[Event],
                                               sizes: list[int] | None) -> None:
    """The values read at each event are the oracle's over that key's events so far."""
    catalog = default_catalog()
    for fs in (catalog.user, catalog.item):
        _, at_events = run(fs, events, sizes, points=True)
        field = fs.key_field
        for i, (_, event) in enumerate(events):
            key = getattr(event, field)
            prefix = [(s, e) for s, e in events[:i + 1] if getattr(e, field) == key]
            assert_close(at_events[i], oracle(fs.entity, prefix))
