"""The pending predictions of one partition: rows in numpy columns, found by index.

A row holds one remembered prediction: its core fields, the bytes it carries to its
training example (its own JSON fields and the point-in-time snapshots), and its
label progress (final, label, version, observed, first click time, extra and late
click counts). Rows of forgotten predictions are reused.

Indexes answer the attribution tiers (:mod:`labels.engine`): by
``prediction_id`` (every row), by (user, request, item) and by (user, item) (served
rows only: a shadow prediction never takes a click, so the tiers never see it, at no
cost per click). A shadow row also keeps its twin state (:data:`TWIN_PENDING`,
:data:`TWIN_LINKED`, :data:`TWIN_ORPHAN`) and its served twin's id. A deadline wheel
(:class:`DeadlineWheel`) finds the rows whose next deadline a watermark reached
without scanning every row.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]

#: "No value" in int64 columns.
NONE: Final = np.iinfo(np.int64).min

#: What a row's next deadline is for (RESOLVE: a shadow looks for its served twin).
OBSERVE, CLOSE, FORGET, RESOLVE = 1, 2, 3, 4

#: A shadow row's twin state (served rows: TWIN_NONE): not looked for yet, following its
#: served twin, or none found (it closes on its own deadlines).
TWIN_NONE, TWIN_PENDING, TWIN_LINKED, TWIN_ORPHAN = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class PredictionColumns:
    """A batch's predictions, in arrival order (one entry per prediction)."""

    prediction_id: Sequence[str]
    request_id: Sequence[str]
    user_id: Sequence[str]
    item_id: Sequence[str]
    model_id: Sequence[str]
    score: npt.NDArray[np.float64]
    ts: I64
    #: each prediction's own JSON fields, without the braces (goes into its example)
    fields_json: Sequence[bytes]
    #: the user's features as of the prediction (a JSON object), or None
    user_snapshot: Sequence[bytes | None]
    #: arrival sequence numbers (partition-wide, increasing)
    seq: I64
    #: False for a shadow model's prediction (see the README, shadow models)
    served: npt.NDArray[np.bool_] | None = None

    def __len__(self) -> int:
        return len(self.prediction_id)


class DeadlineWheel:
    """Rows by due watermark in buckets of ``bucket_ms``; lazy deletion by due.

    >>> wheel = DeadlineWheel(10)
    >>> wheel.add(np.array([0, 1, 2]), np.array([5, 25, 12]))
    >>> due = np.array([5, 25, 12])
    >>> sorted(wheel.pop(due, 12).tolist()), sorted(wheel.pop(due, 100).tolist())
    ([0, 2], [1])
    """

    def __init__(self, bucket_ms: int) -> None:
        self.bucket_ms = max(1, bucket_ms)
        self._buckets: dict[int, list[tuple[I64, I64]]] = defaultdict(list)
        self._keys: list[int] = []  # sorted bucket ids (a small sorted list)

    def add(self, rows: I64, due: I64) -> None:
        """Schedule ``rows`` at ``due``."""
        if len(rows) == 0:
            return
        bucket = due // self.bucket_ms
        order = np.argsort(bucket, kind="stable")
        bucket, rows, due = bucket[order], rows[order], due[order]
        cuts = np.flatnonzero(np.diff(bucket)) + 1
        for part in np.split(np.arange(len(rows)), cuts):
            b = int(bucket[part[0]])
            if b not in self._buckets:
                import bisect

                bisect.insort(self._keys, b)
            self._buckets[b].append((rows[part], due[part]))

    def add_one(self, row: int, due: int) -> None:
        """Schedule one row (the per-click path: no numpy sorting for a single entry)."""
        b = due // self.bucket_ms
        if b not in self._buckets:
            import bisect

            bisect.insort(self._keys, b)
        self._buckets[b].append((np.array([row], dtype=np.int64),
                                 np.array([due], dtype=np.int64)))

    def pop(self, current_due: I64, watermark_ms: int) -> I64:
        """Rows still scheduled (``current_due[row]`` = their due) with due <= watermark."""
        out: list[I64] = []
        limit = watermark_ms // self.bucket_ms
        while self._keys and self._keys[0] <= limit:
            b = self._keys[0]
            parts = self._buckets[b]
            rows = np.concatenate([r for r, _ in parts])
            due = np.concatenate([d for _, d in parts])
            live = current_due[rows] == due
            rows, due = rows[live], due[live]
            ready = due <= watermark_ms
            out.append(rows[ready])
            if ready.all():
                del self._buckets[b]
                self._keys.pop(0)
            else:  # the partial last bucket: keep what is not due yet
                self._buckets[b] = [(rows[~ready], due[~ready])]
                break
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def clear(self) -> None:
        """Forget every scheduled row."""
        self._buckets.clear()
        self._keys.clear()


class PendingTable:
    """Rows of remembered predictions with their attribution indexes (see module doc).

    >>> t = PendingTable()
    >>> rows = t.add(["p1"], ["r1"], ["u1"], ["i1"], ["m"], np.array([0.5]), np.array([7]))
    >>> t.by_pid["p1"] == int(rows[0]), t.latest_by_item("u1", "i1", 7, 100)
    (True, 0)
    >>> shadow = t.add(["s1"], ["r1"], ["u1"], ["i1"], ["m2"], np.array([0.4]), np.array([8]),
    ...                served=np.array([False]))
    >>> t.latest_by_item("u1", "i1", 9, 100), t.n_shadows, int(t.twin_state[shadow[0]])
    (0, 1, 1)
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = 0
        self.pid: list[str] = []
        self.request_id: list[str] = []
        self.user_id: list[str] = []
        self.item_id: list[str] = []
        self.model_id: list[str] = []
        self.fields_json: list[bytes] = []
        self.user_snapshot: list[bytes | None] = []
        self.item_snapshot: list[bytes | None] = []
        #: the label record of a final label whose example waits for its item snapshot
        self.waiting: list[bytes | None] = []
        self.score = np.zeros(0)
        self.ts = np.zeros(0, dtype=np.int64)
        self.seq = np.zeros(0, dtype=np.int64)
        self.live = np.zeros(0, dtype=np.bool_)
        self.final = np.zeros(0, dtype=np.bool_)
        self.served = np.zeros(0, dtype=np.bool_)
        #: a shadow row's twin state (TWIN_*) and its served twin's prediction id
        self.twin_state = np.zeros(0, dtype=np.int8)
        self.twin: list[str | None] = []
        #: remembered shadow rows (0: every attribution check for shadows is skipped)
        self.n_shadows = 0
        self.label = np.zeros(0, dtype=np.int8)
        self.version = np.zeros(0, dtype=np.int64)
        self.observed = np.zeros(0, dtype=np.bool_)
        self.click_ts = np.zeros(0, dtype=np.int64)
        self.extra = np.zeros(0, dtype=np.int64)
        self.late = np.zeros(0, dtype=np.int64)
        #: the row's next deadline (NONE: none) and what it is for
        self.due = np.zeros(0, dtype=np.int64)
        self.due_kind = np.zeros(0, dtype=np.int8)
        self.by_pid: dict[str, int] = {}
        self.by_request: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        self.by_item: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._free: list[int] = []
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        extra = capacity - self.capacity
        if extra <= 0:
            return
        for name in ("pid", "request_id", "user_id", "item_id", "model_id"):
            getattr(self, name).extend([""] * extra)
        self.fields_json.extend([b""] * extra)
        for name in ("user_snapshot", "item_snapshot", "waiting", "twin"):
            getattr(self, name).extend([None] * extra)
        for name, dtype, fill in (("score", np.float64, 0.0), ("ts", np.int64, 0),
                                  ("seq", np.int64, 0), ("live", np.bool_, False),
                                  ("final", np.bool_, False), ("served", np.bool_, True),
                                  ("twin_state", np.int8, TWIN_NONE),
                                  ("label", np.int8, -1), ("version", np.int64, 0),
                                  ("observed", np.bool_, False), ("click_ts", np.int64, NONE),
                                  ("extra", np.int64, 0), ("late", np.int64, 0),
                                  ("due", np.int64, NONE), ("due_kind", np.int8, 0)):
            setattr(self, name, np.concatenate((getattr(self, name),
                                                np.full(extra, fill, dtype=dtype))))
        self._free.extend(range(capacity - 1, self.capacity - 1, -1))
        self.capacity = capacity

    def __len__(self) -> int:
        """Remembered predictions."""
        return len(self.by_pid)

    def add(self, pids: Sequence[str], request_ids: Sequence[str], user_ids: Sequence[str],
            item_ids: Sequence[str], model_ids: Sequence[str], score: npt.NDArray[np.float64],
            ts: I64, served: npt.NDArray[np.bool_] | None = None) -> I64:
        """Rows for new predictions (ids not remembered yet), indexed; their rows.

        ``served`` False marks a shadow: indexed by id only, twin state pending.
        """
        n = len(pids)
        free = self._free
        if len(free) < n:
            self._grow(max(2 * self.capacity, self.capacity + n))
        rows = free[:-n - 1:-1] if n else []  # what n pops would give, in that order
        del free[len(free) - n:]
        arr = np.array(rows, dtype=np.int64)
        # fresh tables and the tail of a grown one hand out a run of rows: slices
        run = n > 0 and rows[-1] - rows[0] == n - 1 and bool((np.diff(arr) == 1).all())
        for name, values in (("pid", pids), ("request_id", request_ids),
                             ("user_id", user_ids), ("item_id", item_ids),
                             ("model_id", model_ids)):
            if len(values) != n:
                raise ValueError(f"{name}: {len(values)} values for {n} predictions")
            column = getattr(self, name)
            if run:
                column[rows[0]:rows[0] + n] = values
            else:  # the assignments in C: map() drives them, the deque drops the Nones
                deque(map(column.__setitem__, rows, values), maxlen=0)
        self.score[arr] = score
        self.ts[arr] = ts
        self.live[arr] = True
        self.final[arr] = False
        self.label[arr] = -1
        self.version[arr] = 0
        self.observed[arr] = False
        self.click_ts[arr] = NONE
        self.extra[arr] = 0
        self.late[arr] = 0
        self.by_pid.update(zip(pids, rows, strict=True))
        by_request, by_item = self.by_request, self.by_item
        if served is None or bool(served.all()):
            self.served[arr] = True
            self.twin_state[arr] = TWIN_NONE
            for row, user, req, item in zip(rows, user_ids, request_ids, item_ids, strict=True):
                by_request[(user, req, item)].append(row)
                by_item[(user, item)].append(row)
            return arr
        self.served[arr] = served
        self.twin_state[arr] = np.where(served, TWIN_NONE, TWIN_PENDING)
        self.n_shadows += int((~served).sum())
        for row, user, req, item, srv in zip(rows, user_ids, request_ids, item_ids,
                                             served.tolist(), strict=True):
            if srv:
                by_request[(user, req, item)].append(row)
                by_item[(user, item)].append(row)
        return arr

    def forget(self, rows: Iterable[int]) -> list[str]:
        """Remove rows from every index and free them; their prediction ids."""
        rows = list(rows)
        pid_of = self.pid
        out = [pid_of[row] for row in rows]
        by_pid = self.by_pid
        for pid in out:
            del by_pid[pid]
        self.live[rows] = False
        self.due[rows] = NONE
        self._free.extend(rows)
        fields, user_snap, item_snap, waiting = (self.fields_json, self.user_snapshot,
                                                 self.item_snapshot, self.waiting)
        users, requests, items = self.user_id, self.request_id, self.item_id
        by_request, by_item = self.by_request, self.by_item
        for row, srv in zip(rows, self.served[rows].tolist(), strict=True):
            fields[row] = b""
            user_snap[row] = item_snap[row] = waiting[row] = None
            if not srv:  # a shadow is in no attribution index
                self.twin[row] = None
                self.n_shadows -= 1
                continue
            request = (users[row], requests[row], items[row])
            bucket = by_request[request]
            bucket.remove(row)
            if not bucket:
                del by_request[request]
            item = (users[row], items[row])
            bucket = by_item[item]
            bucket.remove(row)
            if not bucket:
                del by_item[item]
        return out

    # -- attribution lookups -----------------------------------------------------------

    def _latest(self, candidates: Iterable[int]) -> int | None:
        best: tuple[int, str] | None = None
        row_of = None
        for row in candidates:
            key = (int(self.ts[row]), self.pid[row])
            if best is None or key > best:
                best, row_of = key, row
        return row_of

    def eligible(self, row: int, click_ts: int, lead_ms: int, remember_ms: int) -> bool:
        """Whether the row may take a click at ``click_ts``: ``ts - lead <= click_ts``
        (``lead`` is the skew for explicit ids, 0 for the fallback) and the prediction is
        still remembered, ``click_ts < ts + remember``."""
        ts = int(self.ts[row])
        return ts - lead_ms <= click_ts < ts + remember_ms

    def latest_by_request(self, user: str, request: str, item: str, click_ts: int,
                          lead_ms: int, remember_ms: int) -> int | None:
        """The latest eligible served prediction for (request, item) to ``user``."""
        rows = self.by_request.get((user, request, item), ())
        return self._latest(r for r in rows if self.eligible(r, click_ts, lead_ms, remember_ms))

    def latest_by_item(self, user: str, item: str, click_ts: int,
                       remember_ms: int) -> int | None:
        """The latest served prediction of ``item`` to ``user`` with ts <= click ts (lead 0)."""
        rows = self.by_item.get((user, item), ())
        return self._latest(r for r in rows if self.eligible(r, click_ts, 0, remember_ms))

    def rows_alive(self) -> I64:
        """Every remembered row."""
        return np.flatnonzero(self.live[:self.capacity]).astype(np.int64)
