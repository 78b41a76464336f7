"""The natural-label engine of one partition: predictions in columns, clicks one by one.

Semantics (README, ``labels``; every rule below is tested against an independent
oracle in every mode):

- a prediction opens a pending label; a click inside ``[pred.ts, pred.ts + window)``
  makes it positive (the first such click wins; later ones are counted); when the
  watermark reaches ``pred.ts + window + skew`` without one it is negative
  (``LabelConfig.mode`` decides which records go out, see :mod:`labels.config`);
- a click is attributed once the watermark has passed it (due ``click.ts + 1``): by
  its ``prediction_id``, else ``request_id`` + ``item_id``, else the latest
  prediction of its item to its user at or before it (ties: the larger
  ``(ts, prediction_id)``); an explicit id may precede its prediction by up to the
  skew, the fallback never; a prediction is matched as long as it is remembered;
  a click whose explicit ids name nothing yet is held until
  ``click.ts + skew + 1`` (attributed at once if the named prediction arrives);
- due clicks are taken in (due, ts, content) order, so "the first click" is the
  earliest whatever the arrival order; before a click is applied to a prediction,
  that prediction's own earlier deadlines are applied, so it sees the label state
  the timeline order gives;
- a final prediction is remembered until ``pred.ts + window + late_horizon + skew``
  for late and extra clicks, then forgotten.

Shadow predictions (``served: false``: another model's score of the same request and
item as a served prediction) are labelled with their served twin's outcome and never
take a click; the rules are in :mod:`labels.shadows`.

Predictions are the bulk of the input: they are added, closed and forgotten as
columns (:class:`~labels.pending.PendingTable`, :class:`~labels.pending.DeadlineWheel`);
clicks are few and walk the attribution tiers one by one.

This module is the label state machine: predictions are opened, scheduled, observed,
closed and forgotten, and their label records and training examples emitted.
:class:`LabelEngine` is assembled from it and its other parts, one concept a module:
the state they share (:mod:`labels.state`), clicks held and attributed
(:mod:`labels.clicks`), shadow twins (:mod:`labels.shadows`) and the changelog
(:mod:`labels.changelog`).

A batch is fed as: :meth:`LabelEngine.add_predictions` (all of the batch's
predictions, with their arrival numbers), then :meth:`LabelEngine.add_click` for each
click in arrival order, then :meth:`LabelEngine.advance` to the batch's watermark.
Outputs and changelog deltas are taken with :meth:`take_outputs` and :meth:`take_deltas`.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import msgspec
import numpy as np

from events.contracts import SCHEMA_VERSION
from labels.changelog import Changelog
from labels.clicks import (
    REASON_NO_PREDICTION,
    REASON_SHADOW_PREDICTION_ID,
    REASON_UNKNOWN_PREDICTION_ID,
    REASON_UNKNOWN_REQUEST_ID,
    Clicks,
    tiebreak,
)
from labels.config import MODE_EARLY_NEGATIVE, MODE_OBSERVE_THEN_CORRECT
from labels.pending import (
    CLOSE,
    FORGET,
    NONE,
    OBSERVE,
    RESOLVE,
    TWIN_LINKED,
    TWIN_PENDING,
    PredictionColumns,
)
from labels.records import LabelRecord, LabelTail, training_example
from labels.shadows import ShadowTwins
from labels.state import CLOSE_KIND, I64, POSITIVE_KIND, LabelOutput, OutputKind

#: the names this module is known by (some are defined by its parts)
__all__ = [
    "REASON_NO_PREDICTION",
    "REASON_SHADOW_PREDICTION_ID",
    "REASON_UNKNOWN_PREDICTION_ID",
    "REASON_UNKNOWN_REQUEST_ID",
    "LabelEngine",
    "LabelOutput",
    "OutputKind",
    "tiebreak",
]


class LabelEngine(Clicks, ShadowTwins, Changelog):
    """Pending labels of one partition (see the module doc; its state and constructor:
    :class:`~labels.state.EngineState`).

    >>> import numpy as np
    >>> from events.contracts import Click
    >>> from labels.config import LabelConfig
    >>> from labels.pending import PredictionColumns
    >>> eng = LabelEngine(LabelConfig(window_ms=60_000, skew_ms=0), item_snapshots=False)
    >>> eng.add_predictions(PredictionColumns(["p1"], ["r1"], ["u1"], ["i1"], ["m"],
    ...     np.array([0.3]), np.array([1_000_000]), [b'"prediction_id":"p1"'], [None],
    ...     np.array([0])))
    >>> eng.add_click(Click("u1", "i1", 1_020_000), b'{}', 1, 1_020_000)
    >>> eng.advance(1_020_001)
    >>> [(o.kind, o.key) for o in eng.take_outputs()]
    [('label', 'p1'), ('training_example', 'p1')]
    """

    # -- predictions ----------------------------------------------------------------

    def add_predictions(self, cols: PredictionColumns) -> None:
        """Open pending labels for a batch's predictions (repeated ids are duplicates)."""
        if not len(cols):
            return
        table = self.table
        fresh: list[int] = []
        seen: set[str] = set()
        for i, pid in enumerate(cols.prediction_id):
            if pid in table.by_pid or pid in seen:
                self._out("duplicate_prediction", pid, b"{" + cols.fields_json[i]
                          + b',"reason":"duplicate prediction_id","schema_version":1}')
            else:
                seen.add(pid)
                fresh.append(i)
        if not fresh:
            return
        sel = np.array(fresh, dtype=np.int64)
        every = len(fresh) == len(cols)

        def pick(values: Sequence[str]) -> Sequence[str]:
            return values if every else [values[i] for i in fresh]

        rows = table.add(pick(cols.prediction_id), pick(cols.request_id), pick(cols.user_id),
                         pick(cols.item_id), pick(cols.model_id), cols.score[sel],
                         cols.ts[sel], None if cols.served is None else cols.served[sel])
        table.seq[rows] = cols.seq[sel]
        for row, i in zip(rows.tolist(), fresh, strict=True):
            table.fields_json[row] = cols.fields_json[i]
            table.user_snapshot[row] = cols.user_snapshot[i]
        self._dirty.update(rows.tolist())
        if self.config.mode == MODE_EARLY_NEGATIVE:
            self._emit_bulk(rows, 0, "early_negative", final=False, label_ts=table.ts[rows])
        self._schedule(rows)
        if self._held_by_pid or self._held_by_request:
            # a shadow takes no click: it wakes none (a click naming it waits for its release)
            self._wake_held(rows[table.served[rows]] if table.n_shadows else rows)

    def _schedule(self, rows: I64) -> None:
        """Set each row's next deadline from its state and put it on the wheel."""
        if len(rows) == 0:
            return
        if len(rows) == 1:
            self._schedule_one(int(rows[0]))
            return
        cfg, table = self.config, self.table
        ts = table.ts[rows]
        final = table.final[rows]
        kind = np.where(final, FORGET, CLOSE).astype(np.int8)
        due = np.where(final, ts + cfg.window_ms + cfg.late_horizon_ms + cfg.skew_ms,
                       ts + cfg.window_ms + cfg.skew_ms)
        if cfg.mode == MODE_OBSERVE_THEN_CORRECT:
            observe = ~final & ~table.observed[rows]
            kind[observe] = OBSERVE
            due[observe] = ts[observe] + cfg.observe_ms + cfg.skew_ms
        if table.n_shadows:
            state = np.where(final, 0, table.twin_state[rows])
            pending = state == TWIN_PENDING
            kind[pending] = RESOLVE
            due[pending] = ts[pending] + cfg.skew_ms + 1
            linked = state == TWIN_LINKED  # follows its twin: no deadline of its own
            kind[linked] = 0
            due[linked] = NONE
            table.due[rows] = due
            table.due_kind[rows] = kind
            if linked.any():
                rows, due = rows[~linked], due[~linked]
            self.wheel.add(rows, due)
            return
        table.due[rows] = due
        table.due_kind[rows] = kind
        self.wheel.add(rows, due)

    def _schedule_one(self, row: int) -> None:
        cfg, table = self.config, self.table
        ts = int(table.ts[row])
        if table.final[row]:
            kind, due = FORGET, ts + cfg.window_ms + cfg.late_horizon_ms + cfg.skew_ms
        elif table.n_shadows and table.twin_state[row] == TWIN_PENDING:
            kind, due = RESOLVE, ts + cfg.skew_ms + 1
        elif table.n_shadows and table.twin_state[row] == TWIN_LINKED:
            table.due[row], table.due_kind[row] = NONE, 0
            return
        elif cfg.mode == MODE_OBSERVE_THEN_CORRECT and not table.observed[row]:
            kind, due = OBSERVE, ts + cfg.observe_ms + cfg.skew_ms
        else:
            kind, due = CLOSE, ts + cfg.window_ms + cfg.skew_ms
        table.due[row] = due
        table.due_kind[row] = kind
        self.wheel.add_one(row, due)

    # -- deadlines ------------------------------------------------------------------

    def advance(self, watermark_ms: int) -> None:
        """Act on everything the watermark reached: due clicks, then due deadlines."""
        self._advance_clicks(watermark_ms)
        while True:
            rows = self.wheel.pop(self.table.due, watermark_ms)
            if len(rows) == 0:
                return
            if self.table.n_shadows and len(rows) > 1:
                rows = self._in_due_order(rows)
            kind = self.table.due_kind[rows]
            if self.table.n_shadows:  # before forget: a twin forgotten at this watermark
                self._resolve_twins(rows[kind == RESOLVE])  # is still a twin
            self._forget(rows[kind == FORGET])
            self._observe(rows[kind == OBSERVE])
            self._close(rows[kind == CLOSE])

    def _in_due_order(self, rows: I64) -> I64:
        """Rows by (due, prediction_id): a shadow's own deadlines are set when its twin is
        looked for, so the wheel's insertion order would differ between a worker that ran
        through and one restored since; this order is the same for both."""
        pid = self.table.pid
        ids = np.array([pid[r] for r in rows.tolist()])
        return rows[np.lexsort((ids, self.table.due[rows]))]

    def _observe(self, rows: I64, reschedule: bool = True) -> None:
        if len(rows) == 0:
            return
        cfg, table = self.config, self.table
        table.observed[rows] = True
        self._dirty.update(rows.tolist())
        at = table.ts[rows] + cfg.observe_ms
        clicked = table.click_ts[rows] != NONE
        neg, pos = rows[~clicked], rows[clicked]
        self._emit_bulk(neg, 0, "observed_negative", final=False, label_ts=at[~clicked])
        self._emit_bulk(pos, 1, "observed_positive", final=True, label_ts=at[clicked],
                        delay=table.click_ts[pos] - table.ts[pos])
        if reschedule:
            self._schedule(rows)

    def _close(self, rows: I64) -> None:
        if len(rows) == 0:
            return
        table = self.table
        self._dirty.update(rows.tolist())
        self._emit_bulk(rows, 0, CLOSE_KIND[self.config.mode], final=True,
                        label_ts=table.ts[rows] + self.config.window_ms)
        self._schedule(rows)

    def _forget(self, rows: I64) -> None:
        if len(rows) == 0:
            return
        table = self.table
        waiting = [r for r in rows.tolist() if table.waiting[r] is not None]
        if waiting:
            table.due[waiting] = NONE
            self._forget_after_example.update(waiting)
            rows = np.array([r for r in rows.tolist() if table.waiting[r] is None],
                            dtype=np.int64)
        self._dirty.difference_update(rows.tolist())
        self._forgotten.extend(table.forget(rows.tolist()))

    def _emit_bulk(self, rows: I64, label: int, kind: str, *, final: bool, label_ts: I64,
                   delay: I64 | None = None) -> None:
        """One label record (and training example if due) per row; update their state.

        Column-wise: each field is gathered for all rows at once and the records are
        encoded in one call (a per-row loop here was the replay's largest cost).
        """
        if self._positives:
            self._flush_positives()
        n = len(rows)
        if n == 0:
            return
        cfg, table = self.config, self.table
        table.version[rows] += 1
        window = cfg.window_ms
        rl = rows.tolist()
        pids = [table.pid[r] for r in rl]
        served = table.served[rows]
        delays: list[int | None] = [None] * n if delay is None else delay.tolist()
        every_served = bool(served.all())
        flags: list[bool | msgspec.UnsetType] = [_UNSET] * n
        twins: list[str | msgspec.UnsetType | None] = [_UNSET] * n
        if not every_served:
            for i in np.flatnonzero(~served).tolist():
                flags[i] = False
                if final:
                    twins[i] = table.twin[rl[i]] or None
        if final and label == 1:  # click delays are the served predictions' clicks
            observe, model_id = self.delays.observe, table.model_id
            for i in (range(n) if every_served else np.flatnonzero(served).tolist()):
                observe(model_id[rl[i]], delays[i] or 0, within_window=True)
        ts, lts, versions = table.ts[rows].tolist(), label_ts.tolist(), table.version[rows].tolist()
        records = _lines([LabelRecord(pid, table.request_id[r], table.user_id[r],
                                      table.item_id[r], table.model_id[r], score, label, kind,
                                      v, final, t, lt, d, window, SCHEMA_VERSION, flag, twin)
                          for pid, r, score, v, t, lt, d, flag, twin in zip(
                              pids, rl, table.score[rows].tolist(), versions, ts, lts, delays,
                              flags, twins, strict=True)])
        out = self._outputs
        if not (final or cfg.provisional_examples):
            out.extend(LabelOutput("label", pid, rec) for pid, rec in zip(pids, records,
                                                                           strict=True))
        else:
            tails = [line[1:-1] for line in _lines([
                LabelTail(label, kind, v, final, t, lt, d, window, SCHEMA_VERSION, twin)
                for v, t, lt, d, twin in zip(versions, ts, lts, delays, twins, strict=True)])]
            waits = self.item_snapshots
            for pid, r, rec, tail in zip(pids, rl, records, tails, strict=True):
                out.append(LabelOutput("label", pid, rec))
                if waits and table.item_snapshot[r] is None:
                    table.waiting[r] = tail  # until the item side's snapshot arrives
                else:
                    self._example(r, tail, final)
        if final:
            table.final[rows] = True
            table.label[rows] = label
        if self._followers:
            self._mirror(rows, label, kind, final, label_ts, delay)

    def _flush_positives(self) -> None:
        held, self._positives = self._positives, []
        rows, at, delay = (np.array(column, dtype=np.int64) for column in zip(*held, strict=True))
        self._emit_bulk(rows, 1, POSITIVE_KIND[self.config.mode], final=True, label_ts=at,
                        delay=delay)

    def _example(self, row: int, tail: bytes, final: bool | None = None) -> None:
        """The row's training example with label fields ``tail`` (``final``: whether
        they are final, when the caller knows; else read from ``tail``)."""
        table = self.table
        self._out("training_example", table.pid[row], training_example(
            table.fields_json[row], tail, table.user_snapshot[row], table.item_snapshot[row]))
        if table.final[row] or (b'"final":true' in tail if final is None else final):
            # the final example is out: a remembered prediction needs only its core fields
            table.fields_json[row] = b""
            table.user_snapshot[row] = table.item_snapshot[row] = None

    # -- item snapshots -------------------------------------------------------------

    def add_item_snapshots(self, pids: Sequence[str], snapshots: Sequence[bytes]) -> None:
        """The item's features as of each prediction, sent back by the item side."""
        table = self.table
        for pid, snap in zip(pids, snapshots, strict=True):
            row = table.by_pid.get(pid)
            if row is None or table.item_snapshot[row] is not None:
                continue  # forgotten, or a repeat
            table.item_snapshot[row] = snap
            self._dirty.add(row)
            tail = table.waiting[row]
            if tail is not None:
                table.waiting[row] = None
                self._example(row, tail)
                if row in self._forget_after_example:
                    self._forget_after_example.discard(row)
                    self._forget(np.array([row], dtype=np.int64))

    # -- maturity -------------------------------------------------------------------

    def earliest_open_ts(self) -> int | None:
        """The smallest ts of a prediction without its final label or example, or None.

        A final label whose training example still waits for the item's snapshot counts
        as open: below the label watermark, the examples are out too (the evaluation
        stage holds examples to it as it holds labels).
        """
        table = self.table
        open_rows = table.live & ~table.final
        waiting = [i for i, tail in enumerate(table.waiting) if tail is not None]
        if waiting:
            open_rows[waiting] |= table.live[waiting]
        if not open_rows.any():
            return None
        return int(table.ts[open_rows].min())

    def label_watermark(self, watermark_ms: int | None) -> int | None:
        """Every prediction with ts below this has its final label and example (None: unknown).

        >>> from labels.config import LabelConfig
        >>> LabelEngine(LabelConfig()).label_watermark(10_000)
        10000
        """
        if watermark_ms is None:
            return None
        earliest = self.earliest_open_ts()
        return watermark_ms if earliest is None else min(watermark_ms, earliest)

    def is_empty(self) -> bool:
        """Nothing pending, held or remembered."""
        return not self.table.by_pid and not self._held

    def next_due_ms(self) -> int | None:
        """The smallest watermark at which :meth:`advance` would do something, or None."""
        heap, held = self._heap, self._held
        while heap and (heap[0][3] not in held or held[heap[0][3]].due_ms != heap[0][0]):
            heapq.heappop(heap)  # stale
        table = self.table
        dues = table.due[table.live]
        dues = dues[dues != NONE]  # waiting for an item snapshot, or following a twin
        candidates = [heap[0][0]] if heap else []
        if len(dues):
            candidates.append(int(dues.min()))
        return min(candidates) if candidates else None


_UNSET = msgspec.UNSET
_encode_lines = msgspec.json.Encoder().encode_lines


def _lines(records: list[LabelRecord] | list[LabelTail]) -> list[bytes]:
    """Each record's JSON, encoded in one call (JSON text holds no newline).

    >>> _lines([LabelTail(1, "positive", 1, True, 5, 6, 1, 10, 1)])[0][:30]
    b'{"label":1,"kind":"positive","'
    """
    return _encode_lines(records).split(b"\n")[:-1] if records else []
