"""TileCounts: ring of per-tile counts behind sliding-window sums."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.tiles import TileCounts

T = 10  # tile_ms
N = 3  # tiles per window: window = 30 ms


def build(events: list[int], agg: TileCounts | None = None) -> list[int]:
    """Apply events in the given order with a running as_of = max ts."""
    agg = agg or TileCounts(T, N)
    state = agg.init()
    as_of = None
    for ts in events:
        as_of = ts if as_of is None else max(as_of, ts)
        state = agg.update(state, ts, as_of)
    return state


def brute(events: list[int], as_of: int, n: int = N) -> int:
    """Events with tile_start(as_of) - (W - T) <= ts <= as_of, W = n * T."""
    lo = as_of - as_of % T - (n * T - T)
    return sum(1 for ts in events if lo <= ts <= as_of)


@pytest.mark.parametrize(
    ("events", "as_of", "n", "expected"),
    [
        ([], 100, N, 0),  # empty state
        ([100], 100, N, 1),  # the event itself counts
        ([80, 100], 100, N, 2),  # 80 = tile_start(100) - (W - T): lower edge, included
        ([79, 100], 100, N, 1),  # one ms before the lower edge
        ([80, 109], 109, N, 2),  # as_of at the end of its tile: same window as 100
        ([80, 110], 110, N, 1),  # as_of crosses into a new tile: tile 8 drops out
        ([90, 100, 105], 105, 1, 2),  # a 1-tile window shares the ring: current tile only
        ([90, 100, 105], 105, 2, 3),
        ([0, 5, 12, 29], 29, N, 4),
        ([0, 5, 12, 29], 35, N, 2),  # querying later than the newest event
        ([0, 5, 12, 29], 60, N, 0),  # far later: everything expired
        ([10, 10, 10], 10, N, 3),  # duplicates in one tile
        ([1000, 10], 1000, N, 1),  # late event outside the window: ignored
        ([1000, 980], 1000, N, 2),  # late event still inside the window: counted
    ],
)
def test_window_count_table(events: list[int], as_of: int, n: int, expected: int) -> None:
    agg = TileCounts(T, N)
    state = build(events, agg)
    assert agg.window_count(state, as_of, n) == expected
    assert brute(events, as_of, n) == expected


@pytest.mark.parametrize(
    ("events", "expected_state"),
    [
        ([], []),
        ([0], [0, 1, 0, 0]),
        ([0, 10, 20], [2, 1, 1, 1]),
        ([0, 10, 20, 30], [3, 1, 1, 1]),  # tile 0's slot is reused by tile 3
        ([0, 45], [4, 0, 1, 0]),  # advancing by >= N tiles clears the ring
        ([45, 0], [4, 0, 1, 0]),  # the late event is ignored, not an error
    ],
)
def test_state_layout_table(events: list[int], expected_state: list[int]) -> None:
    assert build(events) == expected_state


def test_state_size_is_bounded() -> None:
    state = build(list(range(0, 100_000, 7)))
    assert len(state) == N + 1


def test_invalid_sizes_raise_value_error() -> None:
    with pytest.raises(ValueError):
        TileCounts(0, 3)
    with pytest.raises(ValueError):
        TileCounts(10, 0)


def test_update_with_as_of_before_event_advances_to_event() -> None:
    agg = TileCounts(T, N)
    assert agg.update([], 25, 0) == [2, 0, 0, 1]


events_st = st.lists(st.integers(min_value=0, max_value=200), max_size=30)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(a=events_st, b=events_st, c=events_st)
def test_merge_is_associative_and_matches_union(a: list[int], b: list[int], c: list[int]) -> None:
    agg = TileCounts(T, N)
    sa, sb, sc = build(a), build(b), build(c)
    left = agg.merge(agg.merge(sa, sb), sc)
    right = agg.merge(sa, agg.merge(sb, sc))
    everything = a + b + c
    if not everything:
        assert left == right == []
        return
    as_of = max(everything)
    for query in (as_of, as_of + 7, as_of + 25):
        for n in (1, 2, N):
            expected = brute(everything, query, n)
            assert agg.window_count(left, query, n) == expected
            assert agg.window_count(right, query, n) == expected


@settings(derandomize=True, max_examples=300, deadline=None)
@given(events=events_st, data=st.data())
def test_order_does_not_change_counts(events: list[int], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(events))
    agg = TileCounts(T, N)
    if events:
        as_of = max(events)
        assert agg.result(build(events), as_of) == agg.result(build(shuffled), as_of)
        assert agg.result(build(events), as_of) == brute(events, as_of)
