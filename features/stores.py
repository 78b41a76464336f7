"""The built-in stores: tile rings, last event time, decayed sums, sessions, distinct values.

Tiles and last-seen times are updated with numpy over the whole batch; decayed sums,
sessions and distinct values keep the exact, order-independent scalar rules of
:mod:`features.decay`, :mod:`features.sessions` and :mod:`features.distinct` and walk
only the events (and read positions) that concern them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import exp2
from sys import intern
from typing import Any, ClassVar

import msgspec
import numpy as np
import numpy.typing as npt

from features.batch import NONE, EntityEvents, segmented_cumcount, segmented_max
from features.decay import DecayedSum
from features.distinct import DistinctLast
from features.sessions import Sessions
from features.store import Block, Reading, Store

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_ENCODE = msgspec.json.Encoder().encode
_DECODE_SESSIONS = msgspec.json.Decoder(list[int]).decode
_DECODE_DISTINCT = msgspec.json.Decoder(dict[str, int]).decode


def _numeric(block: Block) -> npt.NDArray[Any]:
    if not isinstance(block, np.ndarray):
        raise TypeError(f"expected a numpy block, got {type(block).__name__}")
    return block


def _objects(block: Block) -> list[Any]:
    if not isinstance(block, list):
        raise TypeError(f"expected a list block, got {type(block).__name__}")
    return block


def _floor_div(values: I64, by: int) -> I64:
    """``values // by`` keeping :data:`NONE` as NONE."""
    return np.where(values == NONE, NONE, values // by)


# -- tiles ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TileStore(Store):
    """Per-tile event counts in a ring of ``slots`` tiles of ``tile_ms``.

    Tile ``k`` (``ts // tile_ms``) lives in slot ``k % slots``; the ring's newest
    tile is the key's as-of tile. A window of ``n <= slots`` tiles as of ``t``
    counts the events in the ``n`` tiles ending with ``t``'s tile.

    >>> TileStore("clicks", 5_000, 12).width()
    12
    """

    source: str
    tile_ms: int
    slots: int
    dtype: ClassVar[type[np.generic] | None] = np.int32
    narrow: ClassVar[type[np.integer[Any]] | None] = np.int16

    def share_key(self) -> object:
        return (TileStore, self.source, self.tile_ms)

    def widen(self, other: Store) -> Store:
        if not isinstance(other, TileStore) or other.share_key() != self.share_key():
            raise ValueError(f"{self!r} and {other!r} cannot share a state")
        return TileStore(self.source, self.tile_ms, max(self.slots, other.slots))

    def width(self) -> int:
        return self.slots

    def _aged(self, block: npt.NDArray[Any], rows: I64, head: I64) -> I64:
        """Rows' tiles newest first: ``out[i, a]`` = count of tile ``head[i] - a``."""
        safe = np.where(head == NONE, 0, head)
        idx = (safe[:, None] - np.arange(self.slots)[None, :]) % self.slots
        aged: I64 = block[rows[:, None], idx].astype(np.int64)
        aged[head == NONE] = 0
        return aged

    def apply(self, block: Block, ev: EntityEvents) -> TileReading:
        block = _numeric(block)
        t, s = self.tile_ms, self.slots
        tiles = ev.ts // t
        head_old = _floor_div(ev.old_as_of, t)
        old = np.zeros((ev.groups, s + 1), dtype=np.int64)
        np.cumsum(self._aged(block, ev.keys, head_old), axis=1, out=old[:, 1:])
        reading = TileReading(self, ev, tiles, head_old, old)
        # the new ring: drop the tiles the as-of moved past, add the batch's events
        head_new = ev.new_as_of // t
        sub = block[ev.keys].astype(np.int64)
        safe = np.where(head_old == NONE, 0, head_old)[:, None]
        slot_tile = safe - ((safe - np.arange(s)[None, :]) % s)
        sub[(slot_tile <= (head_new - s)[:, None]) | (head_old == NONE)[:, None]] = 0
        add = ev.mask(self.source) & (tiles > head_new[ev.group] - s)
        np.add.at(sub, (ev.group[add], tiles[add] % s), 1)
        block[ev.keys] = sub
        return reading

    def read(self, block: Block, rows: I64, as_of: I64) -> TileReading:
        block = _numeric(block)
        head = _floor_div(as_of, self.tile_ms)
        sums = np.zeros((len(rows), self.slots + 1), dtype=np.int64)
        np.cumsum(self._aged(block, rows, head), axis=1, out=sums[:, 1:])
        return TileReading(self, None, None, head, sums)

    def merge(self, a: Any, a_as_of: int, b: Any, b_as_of: int) -> Any:
        # realign both rings to the later as-of tile (older tiles drop out), then add
        out = np.zeros(self.slots, dtype=np.int64)
        heads = [x // self.tile_ms for x in (a_as_of, b_as_of) if x != NONE]
        if not heads:
            return out.astype(self.dtype)
        head = max(heads)
        for ring, as_of in ((a, a_as_of), (b, b_as_of)):
            if as_of == NONE:
                continue
            aged = self._aged(np.asarray(ring)[None, :], np.zeros(1, np.int64),
                              np.array([as_of // self.tile_ms]))[0]
            shift = head - as_of // self.tile_ms
            for age in range(self.slots - shift):
                tile = head - shift - age
                out[tile % self.slots] += aged[age]
        return out.astype(self.dtype)


@dataclass(slots=True)
class TileReading(Reading):
    """Window sums of a :class:`TileStore` at read positions (see :meth:`window`)."""

    store: TileStore
    ev: EntityEvents | None
    tiles: I64 | None
    head_old: I64
    #: per group (apply) or per row (read): cumulative counts of the old ring, newest first
    old: I64
    _cache: dict[int, I64] = field(default_factory=dict)

    def window(self, n: int) -> I64:
        """Events in the ``n`` tiles ending with each read position's as-of tile."""
        got = self._cache.get(n)
        if got is None:
            got = self._cache[n] = self._window(n)
        return got

    def _window(self, n: int) -> I64:
        if not 0 < n <= self.store.slots:
            raise ValueError(f"a window of {n} tiles does not fit {self.store}")
        ev, t = self.ev, self.store.tile_ms
        if ev is None:  # stored rows as of their own as-of: the n newest tiles
            return self.old[:, n].copy()
        tiles = self.tiles
        if tiles is None:
            raise ValueError("a batch reading without tiles")
        q = ev.qpos
        g = ev.group[q]
        ct = ev.as_of // t
        theta = ct - n  # a tile counts at a position when it is > theta there
        # old ring: its newest (head_old - ct + n) tiles are still in the window
        has_old = self.head_old[g] != NONE
        m = np.clip(np.where(has_old, self.head_old[g], ct[q]) - ct[q] + n, 0, self.store.slots)
        old_part = np.where(has_old, self.old[g, m], 0)
        # batch: events j <= q of the group with tile > theta[q]; an event already out
        # of the window when it arrived never counts later either, so drop those, and
        # then no later event can be <= theta[q]: a sorted search finds the rest
        src = ev.mask(self.store.source)
        ct_prev = _floor_div(ev.prev_as_of, t)
        expired = src & (ct_prev != NONE) & (tiles <= ct_prev - n)
        keep = src & ~expired
        seen = segmented_cumcount(keep, ev.starts, ev.group)[q]
        if not keep.any():
            return old_part
        lo = int(min(tiles[keep].min(), theta[q].min()))
        span = int(max(tiles[keep].max(), theta[q].max())) - lo + 2
        if span * (ev.groups + 1) >= 2**62:
            raise ValueError(f"{self.store}: batch spans too many tiles to read at once")
        keys = np.sort(ev.group[keep] * span + (tiles[keep] - lo + 1))
        probe = g * span + (theta[q] - lo + 1)
        at_or_below = np.searchsorted(keys, probe, side="right") - np.searchsorted(
            keys, g * span, side="left")
        out: I64 = old_part + seen - at_or_below
        return out


# -- last event time -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LastStore(Store):
    """The newest event time of ``source`` seen (:data:`~features.batch.NONE` if none).

    >>> LastStore("clicks").empty().tolist()
    [-9223372036854775808]
    """

    source: str
    dtype: ClassVar[type[np.generic] | None] = np.int64

    def width(self) -> int:
        return 1

    def empty(self) -> Any:
        return np.full(1, NONE, dtype=np.int64)

    def apply(self, block: Block, ev: EntityEvents) -> LastReading:
        block = _numeric(block)
        src = ev.mask(self.source)
        old = block[ev.keys, 0]
        if src.any():
            base = int(ev.ts[src].min())
            running = segmented_max(np.where(src, ev.ts - base + 1, 0), ev.group, ev.starts)
            batch_last = np.where(running > 0, running + base - 1, NONE)
            last = np.maximum(batch_last, old[ev.group])
        else:
            last = old[ev.group]
        block[ev.keys, 0] = last[ev.starts[1:] - 1]
        return LastReading(last[ev.qpos])

    def read(self, block: Block, rows: I64, as_of: I64) -> LastReading:
        block = _numeric(block)
        return LastReading(block[rows, 0].copy())

    def merge(self, a: Any, a_as_of: int, b: Any, b_as_of: int) -> Any:
        return np.maximum(np.asarray(a), np.asarray(b))


@dataclass(frozen=True, slots=True)
class LastReading(Reading):
    """The newest event time at each read position (NONE: none yet)."""

    last: I64


# -- decayed sums ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecayStore(Store):
    """Half-life decayed count of ``source`` events, kept as (value, reference ts).

    Columns are ``[value, ref_ts]`` with ``ref_ts`` NaN while empty; the rules are
    :class:`features.decay.DecayedSum`'s.

    >>> DecayStore("clicks", 600_000).empty().tolist()
    [0.0, nan]
    """

    source: str
    half_life_ms: int
    dtype: ClassVar[type[np.generic] | None] = np.float64

    def width(self) -> int:
        return 2

    def empty(self) -> Any:
        return np.array([0.0, np.nan])

    def apply(self, block: Block, ev: EntityEvents) -> DecayReading:
        block = _numeric(block)
        h = self.half_life_ms
        src = ev.mask(self.source)
        # state after each source event (positions in group order), then the state
        # in force at every read position: its group's last source event at or before
        after = np.empty((len(ev.ts), 2))
        src_pos = np.flatnonzero(src)
        group, ts = ev.group, ev.ts
        keys = ev.keys
        g_prev, value, ref = -1, 0.0, float("nan")
        for pos in src_pos.tolist():
            g = int(group[pos])
            if g != g_prev:
                value, ref = float(block[keys[g], 0]), float(block[keys[g], 1])
                g_prev = g
            t = float(ts[pos])
            if ref != ref:  # empty (NaN)
                value, ref = 1.0, t
            elif t >= ref:
                value = value * exp2((ref - t) / h) + 1.0
                ref = t
            else:
                value += exp2((t - ref) / h)
            after[pos, 0], after[pos, 1] = value, ref
        marker = segmented_max(np.where(src, np.arange(len(ts)) + 1, 0), group, ev.starts)
        state = np.empty((len(ts), 2))
        has = marker > 0
        state[has] = after[marker[has] - 1]
        state[~has] = block[keys[group[~has]]]
        ends = ev.starts[1:] - 1
        block[keys] = state[ends]
        q = ev.qpos
        return DecayReading(state[q, 0], state[q, 1], h)

    def read(self, block: Block, rows: I64, as_of: I64) -> DecayReading:
        block = _numeric(block)
        return DecayReading(block[rows, 0].copy(), block[rows, 1].copy(), self.half_life_ms)

    def merge(self, a: Any, a_as_of: int, b: Any, b_as_of: int) -> Any:
        agg = DecayedSum(self.half_life_ms)

        def scalar(x: Any) -> list[float]:
            return [] if x[1] != x[1] else [float(x[0]), float(x[1])]
        out = agg.merge(scalar(a), scalar(b))
        return np.array(out if out else [0.0, np.nan])


@dataclass(frozen=True, slots=True)
class DecayReading(Reading):
    """Decayed sums at read positions, as (value at ``ref``, ``ref``); see :meth:`at`."""

    value: F64
    ref: F64
    half_life_ms: int

    def at(self, as_of: I64) -> F64:
        """The decayed sums as of ``as_of`` (0 where empty).

        >>> DecayReading(np.array([2.0, 0.0]), np.array([0.0, np.nan]), 100).at(
        ...     np.array([100, 5])).tolist()
        [1.0, 0.0]
        """
        empty = np.isnan(self.ref)
        back = np.where(empty, 0.0, self.ref - np.where(empty, 0, as_of))
        out: F64 = np.where(empty, 0.0, self.value * np.exp2(back / self.half_life_ms))
        return out


# -- sessions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionStore(Store):
    """Sessions (:class:`features.sessions.Sessions`): one flat int list per key.

    >>> SessionStore("any", 1_800_000, 3_600_000).encode([0, 5, 2])
    b'[0,5,2]'
    """

    source: str
    gap_ms: int
    horizon_ms: int

    def empty(self) -> Any:
        return None

    def new_block(self, capacity: int) -> Block:
        return [None] * capacity  # None: no session yet (no list kept for it)

    def apply(self, block: Block, ev: EntityEvents) -> SessionReading:
        block = _objects(block)
        agg = Sessions(self.gap_ms, self.horizon_ms)
        src = ev.mask(self.source)
        n_q = len(ev.qpos)
        count = np.zeros(n_q, dtype=np.int64)
        duration = np.full(n_q, NONE, dtype=np.int64)
        # read positions in group order, visited with the events
        order = np.argsort(ev.qpos, kind="stable")
        wanted = ev.qpos[order].tolist()
        w = 0
        gap, horizon = self.gap_ms, self.horizon_ms
        wm = ev.watermark
        ts_l, as_of_l = ev.ts.tolist(), ev.as_of.tolist()
        keys = ev.keys.tolist()
        src_l = src.tolist()
        wm_l = None if wm is None else wm.tolist()
        for g in range(ev.groups):
            state: list[int] = block[keys[g]] or []
            for pos in range(int(ev.starts[g]), int(ev.starts[g + 1])):
                as_of = as_of_l[pos]
                if src_l[pos]:
                    cap = as_of
                    if wm_l is not None and wm_l[pos] != NONE:
                        cap = min(as_of, wm_l[pos] + horizon)
                    state = agg.update(state, ts_l[pos], cap)
                while w < len(wanted) and wanted[w] == pos:
                    if state and as_of - state[-2] < gap:
                        count[order[w]] = state[-1]
                        duration[order[w]] = state[-2] - state[-3]
                    w += 1
            block[keys[g]] = state or None
        return SessionReading(count, duration)

    def read(self, block: Block, rows: I64, as_of: I64) -> SessionReading:
        block = _objects(block)
        count = np.zeros(len(rows), dtype=np.int64)
        duration = np.full(len(rows), NONE, dtype=np.int64)
        for i, (row, t) in enumerate(zip(rows.tolist(), as_of.tolist(), strict=True)):
            state = block[row]
            if state and t - state[-2] < self.gap_ms:
                count[i], duration[i] = state[-1], state[-2] - state[-3]
        return SessionReading(count, duration)

    def merge(self, a: Any, a_as_of: int, b: Any, b_as_of: int) -> Any:
        return Sessions(self.gap_ms, self.horizon_ms).merge(list(a or []), list(b or []))

    def encode(self, state: Any) -> bytes:
        return _ENCODE(state or [])

    def decode(self, raw: bytes) -> Any:
        return _DECODE_SESSIONS(raw) or None


@dataclass(frozen=True, slots=True)
class SessionReading(Reading):
    """(events, duration) of the session open at each read position (0 / NONE if none)."""

    count: I64
    duration: I64


# -- distinct values -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DistinctStore(Store):
    """Exact distinct ``field`` values (item or user ids) in a window of ``slots`` tiles.

    Per key a dict ``{value: newest tile}`` (:class:`features.distinct.DistinctLast`).

    >>> store = DistinctStore("clicks", "item_id", 300_000, 12)
    >>> store.decode(store.encode({"i,1": 7, "i:2": 8}))
    {'i,1': 7, 'i:2': 8}
    """

    source: str
    field: str
    tile_ms: int
    slots: int

    def empty(self) -> Any:
        return None

    def new_block(self, capacity: int) -> Block:
        return [None] * capacity  # None: no value yet (no dict kept for it)

    def apply(self, block: Block, ev: EntityEvents) -> DistinctReading:
        block = _objects(block)
        agg = DistinctLast(self.tile_ms, self.slots)
        codes = ev.fields[self.field].tolist()  # the ids, as str
        src = ev.mask(self.source).tolist()
        n_q = len(ev.qpos)
        counts = np.zeros(n_q, dtype=np.int64)
        order = np.argsort(ev.qpos, kind="stable")
        wanted = ev.qpos[order].tolist()
        w = 0
        t = self.tile_ms
        ts_l, as_of_l = ev.ts.tolist(), ev.as_of.tolist()
        keys = ev.keys.tolist()
        starts = ev.starts.tolist()
        for g in range(ev.groups):
            state: dict[str, int] = block[keys[g]] or {}
            for pos in range(starts[g], starts[g + 1]):
                if src[pos]:
                    state = agg.update(state, intern(codes[pos]), ts_l[pos], as_of_l[pos])
                while w < len(wanted) and wanted[w] == pos:
                    lo = as_of_l[pos] // t - self.slots
                    counts[order[w]] = sum(1 for k in state.values() if k > lo)
                    w += 1
            block[keys[g]] = state or None
        return DistinctReading(counts)

    def read(self, block: Block, rows: I64, as_of: I64) -> DistinctReading:
        block = _objects(block)
        counts = np.zeros(len(rows), dtype=np.int64)
        for i, (row, at) in enumerate(zip(rows.tolist(), as_of.tolist(), strict=True)):
            if at != NONE:
                lo = at // self.tile_ms - self.slots
                counts[i] = sum(1 for k in (block[row] or {}).values() if k > lo)
        return DistinctReading(counts)

    def merge(self, a: Any, a_as_of: int, b: Any, b_as_of: int) -> Any:
        merged = DistinctLast(self.tile_ms, self.slots).merge(dict(a or {}), dict(b or {}))
        ends = [x // self.tile_ms for x in (a_as_of, b_as_of) if x != NONE]
        lo = max(ends) - self.slots if ends else None
        return {k: v for k, v in merged.items() if lo is None or v > lo}

    def encode(self, state: Any) -> bytes:
        return _ENCODE(state or {})

    def decode(self, raw: bytes) -> Any:
        return {intern(k): v for k, v in _DECODE_DISTINCT(raw).items()} or None


@dataclass(frozen=True, slots=True)
class DistinctReading(Reading):
    """Distinct values in the store's window at each read position."""

    counts: I64
