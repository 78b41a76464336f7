"""Table-driven tests and merge properties of LastSeen, DecayedSum, DistinctLast, Sessions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.decay import DecayedSum
from features.distinct import DistinctLast
from features.latest import LastSeen
from features.sessions import Sessions

# ---------------------------------------------------------------- LastSeen


@pytest.mark.parametrize(
    ("events", "as_of", "expected"),
    [
        ([], 100, None),  # no event: None, not 0
        ([100], 100, 0),
        ([40, 100, 70], 130, 30),
        ([100, 40], 100, 0),  # a late, older event does not move it back
    ],
)
def test_last_seen_table(events: list[int], as_of: int, expected: int | None) -> None:
    agg = LastSeen()
    state = agg.init()
    for ts in events:
        state = agg.update(state, ts, max(events))
    assert agg.result(state, as_of) == expected


def test_last_seen_merge() -> None:
    agg = LastSeen()
    assert agg.merge(None, None) is None
    assert agg.merge(3, None) == agg.merge(None, 3) == 3
    assert agg.merge(agg.merge(1, 5), 3) == agg.merge(1, agg.merge(5, 3)) == 5


# ---------------------------------------------------------------- DecayedSum

H = 1_000  # half-life


def decayed_brute(events: list[int], as_of: int, half_life: int = H) -> float:
    return sum(2.0 ** (-(as_of - ts) / half_life) for ts in events)


def build_decayed(events: list[int], agg: DecayedSum | None = None) -> list[float]:
    agg = agg or DecayedSum(H)
    state = agg.init()
    for ts in events:
        state = agg.update(state, ts, ts)
    return state


@pytest.mark.parametrize(
    ("events", "as_of", "expected"),
    [
        ([], 0, 0.0),
        ([0], 0, 1.0),
        ([0], H, 0.5),  # one half-life later
        ([0], 2 * H, 0.25),
        ([0, 0], H, 1.0),
        ([0, H], H, 1.5),
        ([H, 0], H, 1.5),  # the older event arriving second adds its decayed weight
        ([0, 3 * H, H], 3 * H, 1.0 + 0.25 + 0.125),
        ([0], 2_000 * H, 0.0),  # underflows to 0, no error
    ],
)
def test_decayed_table(events: list[int], as_of: int, expected: float) -> None:
    agg = DecayedSum(H)
    assert agg.result(build_decayed(events), as_of) == pytest.approx(expected, rel=1e-12)


def test_decayed_invalid_half_life() -> None:
    with pytest.raises(ValueError):
        DecayedSum(0)


times = st.lists(st.integers(min_value=0, max_value=20 * H), max_size=25)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(a=times, b=times, c=times)
def test_decayed_merge_is_associative(a: list[int], b: list[int], c: list[int]) -> None:
    agg = DecayedSum(H)
    sa, sb, sc = build_decayed(a), build_decayed(b), build_decayed(c)
    left = agg.merge(agg.merge(sa, sb), sc)
    right = agg.merge(sa, agg.merge(sb, sc))
    if not a + b + c:
        assert left == right == []
        return
    as_of = max(a + b + c) + 500
    expected = decayed_brute(a + b + c, as_of)
    assert math.isclose(agg.result(left, as_of), expected, rel_tol=1e-9)
    assert math.isclose(agg.result(right, as_of), expected, rel_tol=1e-9)


# ---------------------------------------------------------------- DistinctLast

DT, DN = 10, 3  # tile, tiles: a 30 ms window


def build_distinct(events: list[tuple[str, int]]) -> dict[str, int]:
    agg = DistinctLast(DT, DN)
    state = agg.init()
    as_of = None
    for value, ts in events:
        as_of = ts if as_of is None else max(as_of, ts)
        state = agg.update(state, value, ts, as_of)
    return state


def distinct_brute(events: list[tuple[str, int]], as_of: int, n: int = DN) -> int:
    lo = as_of - as_of % DT - (n * DT - DT)
    return len({value for value, ts in events if lo <= ts <= as_of})


@pytest.mark.parametrize(
    ("events", "as_of", "n", "expected"),
    [
        ([], 50, DN, 0),
        ([("a", 50)], 50, DN, 1),
        ([("a", 30), ("a", 50)], 50, DN, 1),  # a repeat is one value
        ([("a", 30), ("b", 50)], 50, DN, 2),  # 30 is the window's lower edge
        ([("a", 29), ("b", 50)], 50, DN, 1),  # one ms before it
        ([("a", 29), ("b", 50)], 59, DN, 1),
        ([("a", 30), ("b", 50)], 60, DN, 1),  # next tile: 30 leaves the window
        ([("a", 30), ("b", 50)], 50, 1, 1),  # a 1-tile window on the same state
        ([("b", 50), ("a", 10)], 50, DN, 1),  # late value outside the window: ignored
        ([("b", 50), ("a", 45), ("a", 31)], 50, DN, 2),  # late repeat keeps the newest tile
    ],
)
def test_distinct_table(
    events: list[tuple[str, int]], as_of: int, n: int, expected: int
) -> None:
    agg = DistinctLast(DT, DN)
    assert agg.window_count(build_distinct(events), as_of, n) == expected
    assert distinct_brute(events, as_of, n) == expected


def test_distinct_evicts_expired_values() -> None:
    state = build_distinct([(f"v{i}", i * 10) for i in range(100)])
    assert len(state) == DN
    assert set(state) == {"v97", "v98", "v99"}


values_st = st.lists(
    st.tuples(st.sampled_from("abcdef"), st.integers(min_value=0, max_value=200)), max_size=25
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(a=values_st, b=values_st, c=values_st)
def test_distinct_merge_is_associative(
    a: list[tuple[str, int]], b: list[tuple[str, int]], c: list[tuple[str, int]]
) -> None:
    agg = DistinctLast(DT, DN)
    sa, sb, sc = build_distinct(a), build_distinct(b), build_distinct(c)
    left = agg.merge(agg.merge(sa, sb), sc)
    right = agg.merge(sa, agg.merge(sb, sc))
    assert left == right
    everything = a + b + c
    if everything:
        as_of = max(ts for _, ts in everything)
        for n in (1, 2, DN):
            assert agg.window_count(left, as_of, n) == distinct_brute(everything, as_of, n)


# ---------------------------------------------------------------- Sessions

GAP, HORIZON = 10, 1_000


def build_sessions(events: list[int], horizon: int = HORIZON) -> list[int]:
    agg = Sessions(GAP, horizon)
    state = agg.init()
    as_of = None
    for ts in events:
        as_of = ts if as_of is None else max(as_of, ts)
        state = agg.update(state, ts, as_of)
    return state


def sessions_brute(events: list[int]) -> tuple[int, int | None]:
    """The last session: split sorted times where consecutive events are >= GAP apart."""
    if not events:
        return 0, None
    ordered = sorted(events)
    first = ordered[-1]
    count = 0
    for ts in reversed(ordered):
        if first - ts >= GAP:
            break
        first, count = ts, count + 1
    return count, ordered[-1] - first


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], (0, None)),
        ([5], (1, 0)),
        ([0, 9], (2, 9)),  # 9 ms apart: one session
        ([0, 10], (1, 0)),  # exactly GAP apart: a new session
        ([0, 9, 18, 27], (4, 27)),  # a chain of short gaps is one long session
        ([0, 30, 15], (1, 0)),  # 15 is 15 from each: bridges nothing
        ([0, 16, 8], (3, 16)),  # the late 8 bridges two sessions into one
        ([100, 0, 5, 95], (2, 5)),  # late events before the current session
        ([50, 45, 40, 35], (4, 15)),  # reverse order
    ],
)
def test_sessions_table(events: list[int], expected: tuple[int, int | None]) -> None:
    agg = Sessions(GAP, HORIZON)
    state = build_sessions(events)
    as_of = max(events) if events else 0
    assert agg.result(state, as_of) == expected
    assert sessions_brute(events) == expected


def test_session_closed_at_as_of() -> None:
    agg = Sessions(GAP, HORIZON)
    state = build_sessions([0, 5])
    assert agg.result(state, 14) == (2, 5)
    assert agg.result(state, 15) == (0, None)  # GAP after the last event: no open session


def test_sessions_prune_old_intervals_and_ignore_too_late_events() -> None:
    state = build_sessions([0, 100, 200, 300, 1_400], horizon=1_000)
    # intervals ending at or before as_of - horizon - gap = 390 are dropped
    assert state == [1_400, 1_400, 1]
    state = build_sessions([0, 2_000, 999], horizon=1_000)  # 999 < 2000 - 1000: ignored
    assert state == [2_000, 2_000, 1]
    state = build_sessions([0, 2_000, 1_000], horizon=1_000)  # exactly at the horizon: kept
    assert state == [1_000, 1_000, 1, 2_000, 2_000, 1]


session_times = st.lists(st.integers(min_value=0, max_value=300), max_size=30)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(events=session_times, data=st.data())
def test_sessions_order_independent(events: list[int], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(events))
    agg = Sessions(GAP, HORIZON)
    as_of = max(events) if events else 0
    assert agg.result(build_sessions(shuffled), as_of) == sessions_brute(events)
    assert build_sessions(shuffled) == build_sessions(sorted(events))


@settings(derandomize=True, max_examples=300, deadline=None)
@given(a=session_times, b=session_times, c=session_times)
def test_sessions_merge_is_associative(a: list[int], b: list[int], c: list[int]) -> None:
    agg = Sessions(GAP, HORIZON)
    sa, sb, sc = build_sessions(a), build_sessions(b), build_sessions(c)
    left = agg.merge(agg.merge(sa, sb), sc)
    assert left == agg.merge(sa, agg.merge(sb, sc))
    assert left == build_sessions(sorted(a + b + c))


def test_sessions_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        Sessions(0, 10)
    with pytest.raises(ValueError):
        Sessions(10, 0)
