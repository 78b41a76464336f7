"""FeatureTable: one partition's feature state of a :class:`FeatureSet`, in columns.

Per key (a row, found through ``rows``): its as-of time, the last input offset it
applied per *provenance* column (an input topic for users; an input topic and its
origin partition for items), and one numeric block or object list per store.
:meth:`FeatureTable.apply` runs a batch (columns in arrival order) through every
store at once and returns the values at the requested points and at each touched
key's end; :meth:`encode` / :meth:`load` turn touched rows into changelog values
and back.

A record whose offset is not above its key's stored offset for its provenance was
applied before (a redelivery): it is skipped and counted, never applied twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from features.aggregation import Values
from features.batch import NONE, EntityEvents, group_events, segmented_max
from features.featureset import FeatureSet
from features.store import Block, Reading

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]

#: First byte of every encoded row: the encoding's version. ``ROW_NARROW`` rows store
#: integer store columns as int16 (every value of the row fits): most keys are sparse.
ROW_FORMAT: Final = 1
ROW_NARROW: Final = 2


@dataclass(slots=True)
class BatchValues:
    """What a batch produced: values at points (in arrival order) and at touched keys."""

    #: arrival indices (into the batch) of the point reads, ascending
    points: I64
    point_values: list[Values]
    point_as_of: I64
    #: per point, the last offset per provenance column (-1: none)
    point_prov: I64
    #: touched rows and their values after the batch
    rows: I64
    values: list[Values]
    as_of: I64
    prov: I64
    duplicates: int = 0
    #: arrival indices of the records skipped as redeliveries
    skipped: I64 = field(default_factory=lambda: np.empty(0, dtype=np.int64))


class FeatureTable:
    """Columnar state of one feature set for one partition (see the module doc).

    >>> from features.catalog import first_feature_catalog
    >>> table = FeatureTable(first_feature_catalog().user, provenances=1)
    >>> rows = table.rows_for(["u1", "u1"])
    >>> out = table.apply(rows, np.array([10_000, 20_000]), np.zeros(2, np.int8),
    ...                   np.zeros(2, np.int64), np.array([0, 1]))
    >>> out.values[0].to_list(), out.as_of.tolist(), out.prov.tolist()
    ([2], [20000], [[1]])
    """

    def __init__(self, features: FeatureSet, provenances: int, capacity: int = 1024) -> None:
        if provenances < 1:
            raise ValueError(f"provenances must be >= 1, got {provenances}")
        self.features = features
        self.n_prov = provenances
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.capacity = 0
        self.as_of = np.empty(0, dtype=np.int64)
        self.prov = np.empty((0, provenances), dtype=np.int64)
        self.blocks: list[Block] = [store.new_block(0) for store in features.stores]
        self._grow(capacity)

    def __len__(self) -> int:
        """Keys held."""
        return len(self.ids)

    def _grow(self, capacity: int) -> None:
        extra = capacity - self.capacity
        if extra <= 0:
            return
        self.as_of = np.concatenate((self.as_of, np.full(extra, NONE, dtype=np.int64)))
        self.prov = np.concatenate((self.prov, np.full((extra, self.n_prov), -1, np.int64)))
        blocks: list[Block] = []
        for store, block in zip(self.features.stores, self.blocks, strict=True):
            more = store.new_block(extra)
            if isinstance(block, np.ndarray):
                if not isinstance(more, np.ndarray):
                    raise TypeError(f"{store!r}: mixed block kinds")
                blocks.append(np.concatenate((block, more)))
            else:
                blocks.append(list(block) + list(more))
        self.blocks = blocks
        self.capacity = capacity

    def rows_for(self, keys: Sequence[str]) -> I64:
        """The rows of ``keys``, adding rows for keys not seen before."""
        index = self.index
        missing = [k for k in dict.fromkeys(keys) if k not in index]
        if missing:
            start = len(self.ids)
            if start + len(missing) > self.capacity:
                self._grow(max(2 * self.capacity, start + len(missing)))
            index.update(zip(missing, range(start, start + len(missing)), strict=True))
            self.ids.extend(missing)
        return np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))

    def row_of(self, key: str) -> int | None:
        """The row of ``key``, or None when the key was never seen."""
        return self.index.get(key)

    # -- processing -------------------------------------------------------------------

    def apply(self, rows: I64, ts: I64, source: I8, prov: I64, offset: I64,
              points: npt.NDArray[np.bool_] | None = None, watermark: I64 | None = None,
              fields: Mapping[str, npt.NDArray[Any]] | None = None) -> BatchValues:
        """Apply a batch (arrival order) and read values at ``points`` and touched keys.

        ``prov`` is each record's provenance column and ``offset`` its input offset;
        ``watermark`` (after each record) lets sessions keep what late arrivals could
        still join; ``fields`` holds the columns the stores need (e.g. item ids).
        """
        n = len(rows)
        fresh = offset > self.prov[rows, prov]
        # a key may appear twice in a batch with one offset: only a redelivery repeats it
        skipped = np.flatnonzero(~fresh)
        keep = np.flatnonzero(fresh)
        pts = (np.zeros(n, dtype=np.bool_) if points is None else points)[keep]
        ev = group_events(rows[keep], ts[keep], source[keep], self.as_of, pts,
                          None if watermark is None else watermark[keep],
                          {k: v[keep] for k, v in (fields or {}).items()})
        readings = [store.apply(block, ev)
                    for store, block in zip(self.features.stores, self.blocks, strict=True)]
        q_as_of = ev.as_of[ev.qpos]
        values = self._values(readings, q_as_of)
        q_prov = self._prov_at(ev, prov[keep][ev.order], offset[keep][ev.order])
        self.as_of[ev.keys] = ev.new_as_of
        self.prov[ev.keys] = q_prov[ev.n_points:]
        p = ev.n_points
        # point reads back in arrival order
        arrival = keep[ev.order[ev.qpos[:p]]]
        by_arrival = np.argsort(arrival, kind="stable")
        return BatchValues(
            points=arrival[by_arrival],
            point_values=[Values(v.values[:p][by_arrival],
                                 None if v.null is None else v.null[:p][by_arrival])
                          for v in values],
            point_as_of=q_as_of[:p][by_arrival], point_prov=q_prov[:p][by_arrival],
            rows=ev.keys, values=[Values(v.values[p:], None if v.null is None else v.null[p:])
                                  for v in values],
            as_of=ev.new_as_of, prov=self.prov[ev.keys].copy(), duplicates=len(skipped),
            skipped=skipped)

    def _values(self, readings: Sequence[Reading], as_of: I64) -> list[Values]:
        out = []
        for spec, reads in zip(self.features.specs, self.features.reads, strict=True):
            out.append(spec.aggregation.read(spec, [readings[i] for i in reads], as_of))
        return out

    def _prov_at(self, ev: EntityEvents, prov: I64, offset: I64) -> I64:
        """Per read position, the last offset applied per provenance column."""
        out = np.empty((len(ev.qpos), self.n_prov), dtype=np.int64)
        old = self.prov[ev.keys]
        for c in range(self.n_prov):
            mine = np.where(prov == c, offset + 1, 0)
            running = segmented_max(mine, ev.group, ev.starts) - 1
            out[:, c] = np.maximum(running, old[ev.group, c])[ev.qpos]
        return out

    def read(self, rows: I64) -> list[Values]:
        """Stored rows' values as of their own as-of times (the published record)."""
        as_of = self.as_of[rows]
        readings = [store.read(block, rows, as_of)
                    for store, block in zip(self.features.stores, self.blocks, strict=True)]
        return self._values(readings, as_of)

    # -- changelog --------------------------------------------------------------------

    def _fixed(self) -> list[tuple[int, npt.NDArray[Any]]]:
        return [(i, b) for i, b in enumerate(self.blocks) if isinstance(b, np.ndarray)]

    def _layout(self, narrow: bool) -> list[tuple[npt.NDArray[Any], np.dtype[Any]]]:
        """Each fixed block with the dtype it is stored with in a (narrow) row."""
        out = []
        for i, block in self._fixed():
            narrower = self.features.stores[i].narrow
            stored = np.dtype(narrower) if narrow and narrower is not None else block.dtype
            out.append((block, stored))
        return out

    def encode(self, rows: I64) -> list[bytes]:
        """One changelog value per row: format, as-of, offsets, every store's state."""
        n = len(rows)
        if n == 0:
            return []
        small = np.ones(n, dtype=np.bool_)
        for i, block in self._fixed():
            narrower = self.features.stores[i].narrow
            if narrower is not None:
                info = np.iinfo(narrower)
                part = block[rows]
                small &= ((part >= info.min) & (part <= info.max)).all(axis=1)
        out: list[bytes] = [b""] * n
        for narrow in (False, True):
            sel = np.flatnonzero(small == narrow)
            if len(sel) == 0:
                continue
            r = rows[sel]
            m = len(r)
            parts = [np.full((m, 1), ROW_NARROW if narrow else ROW_FORMAT, dtype=np.uint8),
                     self.as_of[r].reshape(m, 1).view(np.uint8),
                     np.ascontiguousarray(self.prov[r]).view(np.uint8)]
            parts += [np.ascontiguousarray(block[r].astype(stored)).view(np.uint8)
                      .reshape(m, -1) for block, stored in self._layout(narrow)]
            fixed = np.concatenate(parts, axis=1)
            width = fixed.shape[1]
            raw = fixed.tobytes()
            for j, i in enumerate(sel.tolist()):
                out[i] = raw[j * width:(j + 1) * width]
        objects = [(store, kept) for store, kept in zip(self.features.stores, self.blocks,
                                                        strict=True)
                   if isinstance(kept, list)]
        if objects:
            for i, row in enumerate(rows.tolist()):
                tail = []
                for store, kept in objects:
                    body = store.encode(kept[row])
                    tail.append(len(body).to_bytes(4, "little") + body)
                out[i] += b"".join(tail)
        return out

    def load(self, keys: Sequence[str], values: Sequence[bytes]) -> None:
        """Set keys' state from :meth:`encode` output (restoring from the changelog)."""
        if not keys:
            return
        rows = self.rows_for(keys)
        ends = np.zeros(len(values), dtype=np.int64)
        formats = np.array([v[0] if v else 0 for v in values], dtype=np.int64)
        for narrow in (False, True):
            sel = np.flatnonzero(formats == (ROW_NARROW if narrow else ROW_FORMAT))
            if len(sel):
                ends[sel] = self._load_fixed(rows[sel], [values[i] for i in sel.tolist()],
                                             narrow)
        bad = np.flatnonzero(ends == 0)
        if len(bad):
            raw = values[int(bad[0])]
            raise ValueError(f"not a feature row of {self.features.state_name} "
                             f"(length {len(raw)}, format {raw[:1]!r})")
        objects = [(i, store) for i, (store, block) in
                   enumerate(zip(self.features.stores, self.blocks, strict=True))
                   if not isinstance(block, np.ndarray)]
        for row, raw, end in zip(rows.tolist(), values, ends.tolist(), strict=True):
            pos = end
            for i, store in objects:
                size = int.from_bytes(raw[pos:pos + 4], "little")
                target = self.blocks[i]
                if isinstance(target, list):
                    target[row] = store.decode(raw[pos + 4:pos + 4 + size])
                pos += 4 + size

    def _load_fixed(self, rows: I64, values: Sequence[bytes], narrow: bool) -> int:
        """Load the fixed part of rows of one format; return its width (0: malformed)."""
        layout = self._layout(narrow)
        widths = [8, 8 * self.n_prov] + [b.shape[1] * d.itemsize for b, d in layout]
        width = 1 + sum(widths)
        if any(len(v) < width for v in values):
            return 0
        head = np.frombuffer(b"".join(v[:width] for v in values), dtype=np.uint8)
        head = head.reshape(len(values), width)
        col = 1
        self.as_of[rows] = head[:, col:col + 8].copy().view(np.int64).ravel()
        col += 8
        self.prov[rows] = head[:, col:col + widths[1]].copy().view(np.int64)
        col += widths[1]
        for (block, stored), w in zip(layout, widths[2:], strict=True):
            part = head[:, col:col + w].copy().view(stored).reshape(len(rows), -1)
            block[rows] = part.astype(block.dtype)
            col += w
        return width
