"""Execution plan: which shared stores a spec needs and how its value is read from them.

Several features can share one store (``clicks_1h`` and ``ctr_1h`` read the same
click tiles), so a :class:`~features.featureset.FeatureSet` first collects every
spec's :class:`StoreKey`, builds one aggregator per key, then binds each spec's
reader to the stores' positions in the state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import exp2
from typing import Any, TypeVar

from features.decay import DecayedSum
from features.distinct import DistinctLast
from features.latest import LastSeen
from features.sessions import Sessions
from features.spec import (
    ANY_SOURCE,
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
from features.tiles import TileCounts

#: Reads one feature value from (store states, as_of_ms, shared window sums).
Reader = Callable[[list[Any], int, list[int]], int | float | None]

#: An aggregator instance driving one store.
Aggregator = TileCounts | DistinctLast | LastSeen | Sessions | DecayedSum

_A = TypeVar("_A", TileCounts, DistinctLast, LastSeen, Sessions, DecayedSum)


@dataclass(frozen=True, slots=True)
class StoreKey:
    """Identity of one shared piece of state: kind, source topic and parameters.

    >>> StoreKey("tiles", "clicks", (25_000,))
    StoreKey(kind='tiles', source='clicks', params=(25000,))
    """

    kind: str
    source: str
    params: tuple[int | str, ...] = ()


@dataclass(frozen=True, slots=True)
class WindowRead:
    """One tile-window sum: a tiles store read over its last ``n_tiles`` tiles.

    >>> WindowRead(StoreKey("tiles", "clicks", (5_000,)), 12).n_tiles
    12
    """

    store: StoreKey
    n_tiles: int


def _tiling(spec: FeatureSpec) -> tuple[int, int]:
    if spec.tile_ms is None or spec.n_tiles is None:
        raise ValueError(f"feature {spec.name!r} has no window")
    return spec.tile_ms, spec.n_tiles


def needs(spec: FeatureSpec) -> list[tuple[StoreKey, int]]:
    """The stores a spec reads, each with the ring size (tiles) it needs, 0 if none.

    >>> needs(FeatureSpec("c", 1, "user", "clicks", 60_000, Count()))
    [(StoreKey(kind='tiles', source='clicks', params=(5000,)), 12)]
    """
    agg = spec.aggregation
    src = spec.source
    if isinstance(agg, Count):
        tile, n = _tiling(spec)
        return [(StoreKey("tiles", src, (tile,)), n)]
    if isinstance(agg, SmoothedCtr):
        tile, n = _tiling(spec)
        return [
            (StoreKey("tiles", "clicks", (tile,)), n),
            (StoreKey("tiles", "predictions", (tile,)), n),
        ]
    if isinstance(agg, DistinctCount):
        tile, n = _tiling(spec)
        return [(StoreKey("distinct", src, (agg.field, tile)), n)]
    if isinstance(agg, TimeSinceLast):
        return [(StoreKey("last", src), 0)]
    if isinstance(agg, SessionEvents | SessionDuration):
        return [(StoreKey("sessions", src, (agg.gap_ms, agg.horizon_ms)), 0)]
    if isinstance(agg, DecayedCount):
        return [(StoreKey("decayed", src, (agg.half_life_ms,)), 0)]
    if isinstance(agg, TrendRatio):
        return [
            (StoreKey("decayed", src, (agg.short_half_life_ms,)), 0),
            (StoreKey("decayed", src, (agg.long_half_life_ms,)), 0),
        ]
    raise ValueError(f"no plan for aggregation {agg!r}")


def _int(value: int | str) -> int:
    if not isinstance(value, int):
        raise ValueError(f"expected an integer store parameter, got {value!r}")
    return value


def make_aggregator(key: StoreKey, size: int) -> Aggregator:
    """The aggregator that drives the store ``key`` (``size`` = ring slots).

    >>> make_aggregator(StoreKey("tiles", "clicks", (5_000,)), 12)
    TileCounts(tile_ms=5000, n_tiles=12)
    """
    p = key.params
    if key.kind == "tiles":
        return TileCounts(_int(p[0]), size)
    if key.kind == "distinct":
        return DistinctLast(_int(p[1]), size)
    if key.kind == "last":
        return LastSeen()
    if key.kind == "sessions":
        return Sessions(_int(p[0]), _int(p[1]))
    if key.kind == "decayed":
        return DecayedSum(_int(p[0]))
    raise ValueError(f"unknown store kind {key.kind!r}")


def agg_field(key: StoreKey) -> str:
    """The event attribute a distinct store counts (its first parameter).

    >>> agg_field(StoreKey("distinct", "clicks", ("item_id", 300_000)))
    'item_id'
    """
    if key.kind != "distinct":
        raise ValueError(f"store {key} counts no event field")
    return str(key.params[0])


def applies_to(store_source: str, event_source: str) -> bool:
    """True when events of ``event_source`` update a store reading ``store_source``.

    >>> applies_to("any", "clicks"), applies_to("clicks", "predictions")
    (True, False)
    """
    return store_source in (event_source, ANY_SOURCE)


def _bind(
    stores: Mapping[StoreKey, tuple[int, Aggregator]], key: StoreKey, kind: type[_A]
) -> tuple[int, _A]:
    index, agg = stores[key]
    if not isinstance(agg, kind):
        raise ValueError(f"store {key} is driven by {agg!r}, expected a {kind.__name__}")
    return index, agg


def window_reads(spec: FeatureSpec) -> list[WindowRead]:
    """The tile-window sums a spec reads (computed once per ``values`` call, then shared).

    >>> window_reads(FeatureSpec("c", 1, "user", "clicks", 60_000, Count()))
    [WindowRead(store=StoreKey(kind='tiles', source='clicks', params=(5000,)), n_tiles=12)]
    """
    if isinstance(spec.aggregation, Count | SmoothedCtr):
        n = _tiling(spec)[1]
        return [WindowRead(key, n) for key, _ in needs(spec)]
    return []


def make_reader(
    spec: FeatureSpec,
    stores: Mapping[StoreKey, tuple[int, Aggregator]],
    windows: Mapping[WindowRead, int],
) -> Reader:
    """Bind a spec's value computation to its stores' and window sums' positions.

    >>> spec = FeatureSpec("c", 1, "user", "clicks", 60_000, Count())
    >>> (key, size), = needs(spec)
    >>> read = make_reader(spec, {key: (0, make_aggregator(key, size))}, {WindowRead(key, 12): 0})
    >>> read([[0, 3] + [0] * 11], 4_999, [3])
    3
    """
    agg = spec.aggregation
    keys = [key for key, _ in needs(spec)]
    if isinstance(agg, Count | SmoothedCtr):
        w = [windows[read] for read in window_reads(spec)]
        if isinstance(agg, Count):
            k = w[0]
            return lambda s, t, sums: sums[k]
        clicks, imps = w
        a = agg.prior_clicks
        ab = agg.prior_clicks + agg.prior_non_clicks
        return lambda s, t, sums: (sums[clicks] + a) / (sums[imps] + ab)
    if isinstance(agg, DistinctCount):
        n = _tiling(spec)[1]
        i, distinct = _bind(stores, keys[0], DistinctLast)
        distinct_count = distinct.window_count
        return lambda s, t, sums: distinct_count(s[i], t, n)
    if isinstance(agg, TimeSinceLast):
        i, _ = _bind(stores, keys[0], LastSeen)
        return lambda s, t, sums: None if s[i] is None else t - s[i]
    if isinstance(agg, SessionEvents | SessionDuration):
        i, sessions = _bind(stores, keys[0], Sessions)
        return _session_reader(i, sessions, isinstance(agg, SessionEvents))
    if isinstance(agg, DecayedCount):
        i, decayed = _bind(stores, keys[0], DecayedSum)
        decayed_count = decayed.result
        return lambda s, t, sums: decayed_count(s[i], t)
    i, short = _bind(stores, keys[0], DecayedSum)
    j, long = _bind(stores, keys[1], DecayedSum)
    return _trend_reader(i, short, j, long)


def _session_reader(i: int, sessions: Sessions, events: bool) -> Reader:
    # Inlined Sessions.result: the last session, if still open at t.
    gap = sessions.gap_ms

    def read_session_events(s: list[Any], t: int, sums: list[int]) -> int:
        st: list[int] = s[i]
        return st[-1] if st and t - st[-2] < gap else 0

    def read_session_duration(s: list[Any], t: int, sums: list[int]) -> int | None:
        st: list[int] = s[i]
        return st[-2] - st[-3] if st and t - st[-2] < gap else None

    return read_session_events if events else read_session_duration


def _trend_reader(i: int, short: DecayedSum, j: int, long: DecayedSum) -> Reader:
    # rate = decayed * ln2 / half_life, so the ratio of rates needs no ln2.
    scale = long.half_life_ms / short.half_life_ms
    short_hl, long_hl = short.half_life_ms, long.half_life_ms

    def read_trend(s: list[Any], t: int, sums: list[int]) -> float | None:
        ls: list[float] = s[j]
        if not ls:
            return None
        long_value = ls[0] * exp2((ls[1] - t) / long_hl)
        if long_value == 0.0:
            return None
        ss: list[float] = s[i]
        short_value = ss[0] * exp2((ss[1] - t) / short_hl) if ss else 0.0
        return short_value / long_value * scale

    return read_trend
