"""One entity's events of a micro-batch, grouped by key, as numpy columns.

The feature engine never loops over events in Python where numpy can do the work:
a batch arrives as columns in arrival order (the order the worker processed them),
is sorted by (table row, arrival) so that each key's events are contiguous, and
every store updates all keys of the batch at once.

Vocabulary used by every store:

- *position*: an index into the sorted arrays; ``group[pos]`` is the key's group,
  ``starts[g]:starts[g + 1]`` its positions, ``keys[g]`` its table row.
- ``as_of[pos]``: the key's as-of time after the event at ``pos`` (the running max
  of its event times, starting from the state's previous as-of); ``prev_as_of`` the
  same before the event (:data:`NONE` for a key never seen).
- *query positions* ``qpos``: where values are read. Point-in-time reads (e.g. a
  prediction's snapshot, which includes the prediction itself) come first, then one
  read per group at its last event: the key's record after the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

#: "No value" in int64 columns (no event yet, no as-of).
NONE: Final = np.iinfo(np.int64).min

#: Source codes of the two input topics.
CLICKS: Final = 0
PREDICTIONS: Final = 1
SOURCE_CODES: Final = {"clicks": CLICKS, "predictions": PREDICTIONS}

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


def segmented_max(values: I64, group: I64, starts: I64) -> I64:
    """Running max of ``values`` within each contiguous group (``values`` >= 0).

    >>> segmented_max(np.array([3, 1, 5, 0, 2]), np.array([0, 0, 0, 1, 1]),
    ...               np.array([0, 3, 5])).tolist()
    [3, 3, 5, 0, 2]
    """
    if len(values) == 0:
        return values.copy()
    span = int(values.max()) + 1
    if span * (len(starts) + 1) >= 2**62:  # too wide for the offset trick: per group
        out = np.empty_like(values)
        for g in range(len(starts) - 1):
            lo, hi = starts[g], starts[g + 1]
            out[lo:hi] = np.maximum.accumulate(values[lo:hi])
        return out
    # Later groups get larger offsets, so a running max never leaks across groups.
    shifted = values + group * span
    return np.maximum.accumulate(shifted) - group * span


def segmented_cumcount(mask: Bools, starts: I64, group: I64) -> I64:
    """How many ``mask`` positions lie at or before each position, within its group.

    >>> segmented_cumcount(np.array([True, False, True, True]), np.array([0, 2, 4]),
    ...                    np.array([0, 0, 1, 1])).tolist()
    [1, 1, 1, 2]
    """
    total = np.cumsum(mask, dtype=np.int64)
    before = np.concatenate(([0], total))[starts[:-1]]
    return total - before[group]


@dataclass(slots=True)
class EntityEvents:
    """A batch's events of one entity, sorted by (row, arrival); see the module doc."""

    rows: I64
    ts: I64
    source: I8
    as_of: I64
    prev_as_of: I64
    group: I64
    starts: I64
    keys: I64
    old_as_of: I64
    new_as_of: I64
    #: sorted position -> arrival index
    order: I64
    #: read positions: point-in-time queries first, then each group's last position
    qpos: I64
    #: how many of ``qpos`` are point-in-time queries (the rest are group ends)
    n_points: int
    #: watermark promise after each event (None: no watermark known)
    watermark: I64 | None = None
    fields: Mapping[str, npt.NDArray[np.generic]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of events.

        >>> group_events(np.array([4, 4]), np.array([5, 9]), np.zeros(2, np.int8),
        ...              np.full(8, NONE)).size
        2
        """
        return len(self.ts)

    @property
    def groups(self) -> int:
        """Number of distinct keys in the batch."""
        return len(self.keys)

    def mask(self, source: str) -> Bools:
        """Positions whose event comes from ``source`` (``"any"``: all of them).

        >>> ev = group_events(np.array([0, 0]), np.array([5, 9]), np.array([0, 1], np.int8),
        ...                   np.full(1, NONE))
        >>> ev.mask("clicks").tolist(), ev.mask("any").tolist()
        ([True, False], [True, True])
        """
        if source == "any":
            return np.ones(len(self.ts), dtype=np.bool_)
        out: Bools = self.source == SOURCE_CODES[source]
        return out


def group_events(rows: I64, ts: I64, source: I8, table_as_of: I64,
                 points: Bools | None = None, watermark: I64 | None = None,
                 fields: Mapping[str, npt.NDArray[np.generic]] | None = None) -> EntityEvents:
    """Sort a batch by (row, arrival) and derive as-of times, groups and read positions.

    ``rows``/``ts``/``source`` are in arrival order; ``table_as_of`` is the table's
    as-of column (indexed by row); ``points`` marks arrivals that need a
    point-in-time read.

    >>> ev = group_events(np.array([1, 0, 1]), np.array([30, 10, 20]),
    ...                   np.array([0, 1, 1], np.int8), np.array([NONE, 25]),
    ...                   points=np.array([False, False, True]))
    >>> ev.rows.tolist(), ev.as_of.tolist(), ev.prev_as_of.tolist()
    ([0, 1, 1], [10, 30, 30], [-9223372036854775808, 25, 30])
    >>> ev.qpos.tolist(), ev.n_points, ev.keys.tolist(), ev.new_as_of.tolist()
    ([2, 0, 2], 1, [0, 1], [10, 30])
    """
    order = np.argsort(rows, kind="stable").astype(np.int64)
    srows = rows[order]
    sts = ts[order]
    n = len(srows)
    if n:
        brk = np.flatnonzero(srows[1:] != srows[:-1]) + 1
        starts = np.concatenate(([0], brk, [n])).astype(np.int64)
    else:
        starts = np.zeros(1, dtype=np.int64)
    n_groups = len(starts) - 1
    group = np.repeat(np.arange(n_groups, dtype=np.int64), np.diff(starts))
    keys = srows[starts[:-1]]
    old = table_as_of[keys] if n_groups else np.empty(0, dtype=np.int64)
    if n:
        base = int(min(sts.min(), old[old != NONE].min(initial=int(sts.min()))))
        rel = sts - base + 1
        running = segmented_max(rel, group, starts) + base - 1
        old_g = old[group]
        as_of = np.where(old_g == NONE, running, np.maximum(running, old_g))
        prev = np.empty(n, dtype=np.int64)
        prev[1:] = as_of[:-1]
        prev[starts[:-1]] = old
    else:
        as_of = np.empty(0, dtype=np.int64)
        prev = np.empty(0, dtype=np.int64)
    new = as_of[starts[1:] - 1] if n_groups else np.empty(0, dtype=np.int64)
    if points is not None and points.any():
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n, dtype=np.int64)
        point_pos = inverse[np.flatnonzero(points)]
    else:
        point_pos = np.empty(0, dtype=np.int64)
    qpos = np.concatenate((point_pos, starts[1:] - 1)).astype(np.int64)
    sorted_fields = {k: v[order] for k, v in (fields or {}).items()}
    return EntityEvents(
        rows=srows, ts=sts, source=source[order], as_of=as_of, prev_as_of=prev,
        group=group, starts=starts, keys=keys, old_as_of=old, new_as_of=new, order=order,
        qpos=qpos, n_points=len(point_pos),
        watermark=None if watermark is None else watermark[order], fields=sorted_fields)
