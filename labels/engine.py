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
item as a served prediction) are labelled with the served prediction's outcome and
never take a click:

- a shadow's *served twin* is the served prediction a click naming the shadow's
  ``request_id`` + ``item_id`` at the shadow's ts would go to: same user, request and
  item, ``twin.ts - skew <= shadow.ts < twin.ts + window + late_horizon`` (the
  prediction is still remembered), the latest ``(ts, prediction_id)`` if several.
  It is looked for once the watermark reaches ``shadow.ts + skew + 1``, when every
  candidate has arrived, so the answer does not depend on arrival order;
- a shadow with a twin gets, for each of the twin's label records after its
  arrival one (every mode: ``positive``/``negative``, ``late_positive``,
  ``observed_*``, ``real_negative``), the same record: same ``label``, ``kind``,
  ``final``, version sequence, ``delay_ms`` (the impression's click delay), and
  ``label_ts`` = the twin's, raised to the shadow's own ts if that is later; records
  the twin made before the shadow was linked are caught up at once. The shadow's own
  arrival record (``early_negative``) is its own. Shadow records carry
  ``served: false``; a shadow's final label and example carry
  ``served_prediction_id`` (the twin's id, or null);
- a shadow with no twin closes negative on its own deadlines, like a served
  prediction that got no click (its final label has ``served_prediction_id: null``,
  so evaluation can tell it apart);
- attribution sees served predictions only (the request and item indexes hold no
  shadow), so a shadow never takes a click from a served one, even as the only
  candidate. A click whose ``prediction_id`` names a shadow goes, once the watermark
  passes ``click.ts + skew`` (all candidates known), to the served prediction of the
  shadow's ``request_id`` + ``item_id``, else to the click's own request id and the
  fallback; if none takes it, it is unattributed (``shadow_prediction_id``).

Predictions are the bulk of the input: they are added, closed and forgotten as
columns (:class:`~labels.pending.PendingTable`, :class:`~labels.pending.DeadlineWheel`);
clicks are few and walk the attribution tiers one by one.

A batch is fed as: :meth:`LabelEngine.add_predictions` (all of the batch's
predictions, with their arrival numbers), then :meth:`LabelEngine.add_click` for each
click in arrival order, then :meth:`LabelEngine.advance` to the batch's watermark.
Outputs and changelog deltas are taken with :meth:`take_outputs` and :meth:`take_deltas`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt

from events.contracts import SCHEMA_VERSION, Click
from labels.config import MODE_EARLY_NEGATIVE, MODE_OBSERVE_THEN_CORRECT, LabelConfig
from labels.delays import DelayStats
from labels.pending import (
    CLOSE,
    FORGET,
    NONE,
    OBSERVE,
    RESOLVE,
    TWIN_LINKED,
    TWIN_ORPHAN,
    TWIN_PENDING,
    DeadlineWheel,
    PendingTable,
    PredictionColumns,
)
from labels.records import (
    HELD_KEY,
    META_KEY,
    PREDICTION_KEY,
    ClickOnPrediction,
    LabelRecord,
    LabelTail,
    StoredHeld,
    StoredPrediction,
    decode_held,
    decode_prediction,
    encode,
    training_example,
    unattributed,
)

I64 = npt.NDArray[np.int64]

OutputKind = Literal["label", "training_example", "late_click", "extra_click", "unattributed",
                     "duplicate_prediction"]

REASON_UNKNOWN_PREDICTION_ID: Final = "unknown_prediction_id"
REASON_UNKNOWN_REQUEST_ID: Final = "unknown_request_id"
REASON_NO_PREDICTION: Final = "no_prediction"
REASON_SHADOW_PREDICTION_ID: Final = "shadow_prediction_id"

_CLOSE_KIND = {"wait": "negative", MODE_EARLY_NEGATIVE: "negative",
               MODE_OBSERVE_THEN_CORRECT: "real_negative"}
_POSITIVE_KIND = {"wait": "positive", MODE_EARLY_NEGATIVE: "late_positive"}


class LabelOutput(NamedTuple):
    """One record for the caller to publish (or count), by kind; ``key`` is its record key."""

    kind: OutputKind
    key: str
    value: bytes


@dataclass(slots=True)
class _Held:
    click: Click
    json: bytes
    due_ms: int


def tiebreak(click: Click) -> str:
    """A content key ordering clicks with the same due watermark and ts.

    >>> tiebreak(Click("u", "i", 1, click_id="c7"))
    'c7\\x1f\\x1f\\x1fi'
    """
    return "\x1f".join((click.click_id or "", click.prediction_id or "",
                        click.request_id or "", click.item_id))


class LabelEngine:
    """Pending labels of one partition (see the module doc).

    >>> import numpy as np
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

    def __init__(self, config: LabelConfig, item_snapshots: bool = True,
                 bucket_ms: int = 1_000, changelog: bool = True,
                 counts: dict[str, int] | None = None) -> None:
        self.config = config
        self.item_snapshots = item_snapshots
        #: whether changes are kept for :meth:`take_deltas` (replay needs no changelog)
        self.changelog = changelog
        self.table = PendingTable()
        self.wheel = DeadlineWheel(bucket_ms)
        self.delays = DelayStats()
        #: outputs by kind (shared with the caller's counters when given)
        self.counts: dict[str, int] = {} if counts is None else counts
        self._eager = config.eager_clicks and config.mode != MODE_OBSERVE_THEN_CORRECT
        self._remember = config.window_ms + config.late_horizon_ms
        self._held: dict[int, _Held] = {}
        self._heap: list[tuple[int, int, str, int]] = []  # (due, ts, tiebreak, seq)
        self._held_by_pid: dict[str, set[int]] = {}
        self._held_by_request: dict[tuple[str, str, str], set[int]] = {}
        self._next_held = 0
        self._outputs: list[LabelOutput] = []
        self._dirty: set[int] = set()
        self._forgotten: list[str] = []
        self._held_dirty: set[int] = set()
        self._meta_dirty = False
        #: rows past their forget deadline whose final example still waits for its item
        #: snapshot: forgotten once the example is out, never before (nothing is lost)
        self._forget_after_example: set[int] = set()
        #: served row -> the shadow rows following its labels (linked, not final yet)
        self._followers: dict[int, list[int]] = {}

    # -- outputs --------------------------------------------------------------------

    def _out(self, kind: OutputKind, key: str, value: bytes) -> None:
        self._outputs.append(LabelOutput(kind, key, value))

    def take_outputs(self) -> list[LabelOutput]:
        """The records produced since the last call, in the order they were made."""
        out, self._outputs = self._outputs, []
        counts = self.counts
        for kind in [o.kind for o in out]:
            counts[kind] = counts.get(kind, 0) + 1
        return out

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

    def _wake_held(self, rows: I64) -> None:
        """Held clicks whose explicit ids name a new prediction are due at once."""
        table, skew = self.table, self.config.skew_ms
        for row in rows.tolist():
            waiting = set(self._held_by_pid.get(table.pid[row], ()))
            key = (table.user_id[row], table.request_id[row], table.item_id[row])
            waiting |= self._held_by_request.get(key, set())
            for seq in waiting:
                held = self._held[seq]
                click = held.click
                if held.due_ms > click.ts + 1 and self._names(click, row) \
                        and table.ts[row] - skew <= click.ts:
                    held.due_ms = click.ts + 1
                    self._push(seq)

    def _names(self, click: Click, row: int) -> bool:
        """Whether the click's first explicit id points at ``row`` (and it is eligible)."""
        table = self.table
        if click.user_id != table.user_id[row]:
            return False
        if click.prediction_id is not None:
            hit = click.prediction_id == table.pid[row]
        elif click.request_id is not None:
            hit = (click.request_id == table.request_id[row]
                   and click.item_id == table.item_id[row])
        else:
            return False
        return hit and table.eligible(row, click.ts, self.config.skew_ms, self._remember)

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

    # -- clicks ---------------------------------------------------------------------

    def add_click(self, click: Click, click_json: bytes, seq: int,
                  watermark_ms: int | None) -> None:
        """Take a click (arrival number ``seq``, watermark after it was accounted for)."""
        if self._eager and click.prediction_id is not None:
            if watermark_ms is not None:
                self._advance_clicks(watermark_ms)  # clicks due before this one first
            if self._try_eager(click, click_json, seq):
                return
        held_seq = self._next_held
        self._next_held += 1
        self._meta_dirty = True
        self._held[held_seq] = _Held(click, click_json, click.ts + 1)
        self._held_dirty.add(held_seq)
        self._push(held_seq)

    def _push(self, seq: int) -> None:
        held = self._held[seq]
        heapq.heappush(self._heap, (held.due_ms, held.click.ts, tiebreak(held.click), seq))

    def _try_eager(self, click: Click, click_json: bytes, seq: int) -> bool:
        table = self.table
        row = table.by_pid.get(click.prediction_id or "")
        if row is None or table.user_id[row] != click.user_id or table.seq[row] > seq:
            return False
        if table.n_shadows and not table.served[row]:
            return False  # a click naming a shadow is resolved at its release
        if table.final[row] or table.click_ts[row] != NONE:
            return False
        if not table.eligible(row, click.ts, self.config.skew_ms, self._remember) \
                or click.ts >= table.ts[row] + self.config.window_ms:
            return False
        self._apply_click(row, click, click_json)
        return True

    def _advance_clicks(self, watermark_ms: int) -> None:
        heap, held = self._heap, self._held
        while heap and heap[0][0] <= watermark_ms:
            due, _, _, seq = heapq.heappop(heap)
            entry = held.get(seq)
            if entry is None or entry.due_ms != due:
                continue  # stale: moved or resolved
            self._on_due_click(seq, entry)

    def _on_due_click(self, seq: int, held: _Held) -> None:
        click = held.click
        release = click.ts + self.config.skew_ms + 1
        row, reason = self._resolve(click, final=held.due_ms >= release)
        if row is None and reason is None:  # wait for the explicit ids' prediction
            held.due_ms = release
            self._index_held(seq, click)
            self._held_dirty.add(seq)
            self._push(seq)
            return
        self._drop_held(seq, click)
        if row is None:
            self._out("unattributed", click.user_id, unattributed(held.json, reason or ""))
            return
        self._catch_up(row, held.due_ms)
        self._apply_click(row, click, held.json)

    def _index_held(self, seq: int, click: Click) -> None:
        if click.prediction_id is not None:
            self._held_by_pid.setdefault(click.prediction_id, set()).add(seq)
        elif click.request_id is not None:
            key = (click.user_id, click.request_id, click.item_id)
            self._held_by_request.setdefault(key, set()).add(seq)

    def _drop_held(self, seq: int, click: Click) -> None:
        del self._held[seq]
        self._held_dirty.add(seq)
        if click.prediction_id is not None:
            _discard(self._held_by_pid, click.prediction_id, seq)
        elif click.request_id is not None:
            _discard(self._held_by_request, (click.user_id, click.request_id, click.item_id),
                     seq)

    def _resolve(self, click: Click, final: bool) -> tuple[int | None, str | None]:
        """The click's prediction row, or (None, reason), or (None, None): wait."""
        table, skew, remember = self.table, self.config.skew_ms, self._remember
        shadow: int | None = None
        if click.prediction_id is not None:
            row = table.by_pid.get(click.prediction_id)
            if row is not None and table.user_id[row] == click.user_id \
                    and table.eligible(row, click.ts, skew, remember):
                if not table.n_shadows or table.served[row]:
                    return row, None
                shadow = row  # names a shadow: its served twin's request, at release
            if not final:
                return None, None
            if shadow is not None:
                row = table.latest_by_request(click.user_id, table.request_id[shadow],
                                              table.item_id[shadow], click.ts, skew, remember)
                if row is not None:
                    return row, None
        if click.request_id is not None:
            row = table.latest_by_request(click.user_id, click.request_id, click.item_id,
                                          click.ts, skew, remember)
            if row is not None:
                return row, None
            if not final:
                return None, None
        row = table.latest_by_item(click.user_id, click.item_id, click.ts, remember)
        if row is not None:
            return row, None
        if shadow is not None:
            return None, REASON_SHADOW_PREDICTION_ID
        if click.prediction_id is not None:
            return None, REASON_UNKNOWN_PREDICTION_ID
        if click.request_id is not None:
            return None, REASON_UNKNOWN_REQUEST_ID
        return None, REASON_NO_PREDICTION

    def _catch_up(self, row: int, due_ms: int) -> None:
        """Apply the row's own deadlines due before ``due_ms`` (clicks go first at a tie)."""
        table = self.table
        while table.due[row] != NONE and table.due[row] < due_ms \
                and table.due_kind[row] != FORGET:
            one = np.array([row], dtype=np.int64)
            if table.due_kind[row] == OBSERVE:
                self._observe(one)
            else:
                self._close(one)

    def _apply_click(self, row: int, click: Click, click_json: bytes) -> None:
        cfg, table = self.config, self.table
        ts = int(table.ts[row])
        self._dirty.add(row)
        if click.ts >= ts + cfg.window_ms:
            table.late[row] += 1
            self._click_record("late_click", row, click, click_json)
            self.delays.observe(table.model_id[row], click.ts - ts, within_window=False)
            return
        if table.final[row] or table.click_ts[row] != NONE:
            table.extra[row] += 1
            self._click_record("extra_click", row, click, click_json)
            return
        at = max(click.ts, ts)
        one = np.array([row], dtype=np.int64)
        if cfg.mode != MODE_OBSERVE_THEN_CORRECT:
            self._emit_bulk(one, 1, _POSITIVE_KIND[cfg.mode], final=True,
                            label_ts=np.array([at]), delay=np.array([at - ts]))
        elif not table.observed[row] and click.ts < ts + cfg.observe_ms:
            table.click_ts[row] = at  # observed_positive comes at the observation deadline
            return
        else:
            if not table.observed[row]:
                self._observe(one, reschedule=False)
            self._emit_bulk(one, 1, "late_positive", final=True, label_ts=np.array([at]),
                            delay=np.array([at - ts]))
        table.click_ts[row] = at  # the first click's time (a late shadow's twin records)
        self._schedule(one)

    def _click_record(self, kind: Literal["late_click", "extra_click"], row: int,
                      click: Click, click_json: bytes) -> None:
        table = self.table
        ts = int(table.ts[row])
        label = int(table.label[row]) if table.final[row] else None
        record = ClickOnPrediction(kind, table.pid[row], table.request_id[row],
                                   table.user_id[row], table.item_id[row],
                                   table.model_id[row], ts, click.ts, click.ts - ts,
                                   self.config.window_ms, label, _raw(click_json))
        self._out(kind, table.pid[row], encode(record))

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
        self._emit_bulk(rows, 0, _CLOSE_KIND[self.config.mode], final=True,
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
        """One label record (and training example if due) per row; update their state."""
        if len(rows) == 0:
            return
        cfg, table = self.config, self.table
        table.version[rows] += 1
        window = cfg.window_ms
        examples = final or cfg.provisional_examples
        served = table.served[rows].tolist()
        delays = [None] * len(rows) if delay is None else delay.tolist()
        for row, version, lts, d, srv in zip(rows.tolist(), table.version[rows].tolist(),
                                             label_ts.tolist(), delays, served, strict=True):
            pid = table.pid[row]
            ts = int(table.ts[row])
            flag: bool | msgspec.UnsetType = _UNSET
            twin: str | msgspec.UnsetType | None = _UNSET
            if not srv:
                flag = False
                if final:
                    twin = table.twin[row] or None
            elif final and label == 1:  # click delays are the served predictions' clicks
                self.delays.observe(table.model_id[row], d or 0, within_window=True)
            self._out("label", pid, encode(LabelRecord(
                pid, table.request_id[row], table.user_id[row], table.item_id[row],
                table.model_id[row], float(table.score[row]), label, kind, version, final,
                ts, lts, d, window, SCHEMA_VERSION, flag, twin)))
            if examples:
                tail = encode(LabelTail(label, kind, version, final, ts, lts, d, window,
                                        SCHEMA_VERSION, twin))[1:-1]
                if self.item_snapshots and table.item_snapshot[row] is None:
                    table.waiting[row] = tail  # until the item side's snapshot arrives
                else:
                    self._example(row, tail)
        if final:
            table.final[rows] = True
            table.label[rows] = label
        if self._followers:
            self._mirror(rows, label, kind, final, label_ts, delay)

    # -- shadow predictions ---------------------------------------------------------

    def _mirror(self, rows: I64, label: int, kind: str, final: bool, label_ts: I64,
                delay: I64 | None) -> None:
        """The same record for every shadow following one of ``rows`` (see module doc)."""
        followers = self._followers
        shadows: list[int] = []
        lts: list[int] = []
        delays: list[int] = []
        given = [0] * len(rows) if delay is None else delay.tolist()
        for row, at, d in zip(rows.tolist(), label_ts.tolist(), given, strict=True):
            mine = followers.get(row)
            if mine is None:
                continue
            if final:
                del followers[row]
            if len(mine) > 1:  # id order: the same however the followers were linked
                mine = sorted(mine, key=self.table.pid.__getitem__)
            shadows.extend(mine)
            lts.extend([at] * len(mine))
            delays.extend([d] * len(mine))
        if not shadows:
            return
        table = self.table
        these = np.array(shadows, dtype=np.int64)
        if kind.startswith("observed"):
            table.observed[these] = True
        self._dirty.update(shadows)
        self._emit_bulk(these, label, kind, final=final,
                        label_ts=np.maximum(np.array(lts, dtype=np.int64), table.ts[these]),
                        delay=None if delay is None else np.array(delays, dtype=np.int64))
        if final:
            self._schedule(these)

    def _resolve_twins(self, rows: I64) -> None:
        """Link each shadow to its served twin (caught up with its records), or orphan it."""
        if len(rows) == 0:
            return
        table, skew, remember = self.table, self.config.skew_ms, self._remember
        self._dirty.update(rows.tolist())
        for row in sorted(rows.tolist(), key=table.pid.__getitem__):
            twin = table.latest_by_request(table.user_id[row], table.request_id[row],
                                           table.item_id[row], int(table.ts[row]), skew,
                                           remember)
            if twin is None:
                table.twin_state[row], table.twin[row] = TWIN_ORPHAN, ""
                continue
            table.twin_state[row], table.twin[row] = TWIN_LINKED, table.pid[twin]
            one = np.array([row], dtype=np.int64)
            ts = int(table.ts[row])
            # records it has already (its own arrival one; more only when re-linked)
            done = int(table.version[row]) - (self.config.mode == MODE_EARLY_NEGATIVE)
            for label, kind, final, at, d in self._records_of(twin)[done:]:
                if kind.startswith("observed"):
                    table.observed[row] = True
                self._emit_bulk(one, label, kind, final=final, label_ts=np.array([max(at, ts)]),
                                delay=None if d is None else np.array([d]))
            if not table.final[row]:
                self._followers.setdefault(twin, []).append(row)
        self._schedule(rows)

    def _records_of(self, row: int) -> list[tuple[int, str, bool, int, int | None]]:
        """(label, kind, final, label_ts, delay_ms) of the records a served row made after
        its arrival one, rebuilt from its state."""
        cfg, table = self.config, self.table
        ts, version = int(table.ts[row]), int(table.version[row])
        final, label = bool(table.final[row]), int(table.label[row])
        click = int(table.click_ts[row])
        at, delay = (ts, 0) if click == NONE else (click, click - ts)
        out: list[tuple[int, str, bool, int, int | None]] = []
        if cfg.mode == MODE_OBSERVE_THEN_CORRECT and table.observed[row]:
            if final and version == 1:
                return [(1, "observed_positive", True, ts + cfg.observe_ms, delay)]
            out.append((0, "observed_negative", False, ts + cfg.observe_ms, None))
        if final:
            if label == 1:
                out.append((1, _POSITIVE_KIND.get(cfg.mode, "late_positive"), True, at, delay))
            else:
                out.append((0, _CLOSE_KIND[cfg.mode], True, ts + cfg.window_ms, None))
        return out

    def _example(self, row: int, tail: bytes) -> None:
        table = self.table
        self._out("training_example", table.pid[row], training_example(
            table.fields_json[row], tail, table.user_snapshot[row], table.item_snapshot[row]))
        if table.final[row] or b'"final":true' in tail:
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

    # -- changelog ------------------------------------------------------------------

    def take_deltas(self) -> list[tuple[bytes, bytes | None]]:
        """Changelog records of what changed since the last call (None: delete the key)."""
        table = self.table
        out: list[tuple[bytes, bytes | None]] = []
        if not self.changelog:
            self._forgotten, self._dirty, self._held_dirty = [], set(), set()
            return out
        for pid in self._forgotten:
            out.append((PREDICTION_KEY + pid.encode(), None))
        if self._dirty:
            rows = np.fromiter(self._dirty, dtype=np.int64, count=len(self._dirty))
            rows.sort()
            out.extend(self._encode_rows(rows[table.live[rows]]))
        for seq in sorted(self._held_dirty):
            held = self._held.get(seq)
            out.append(self._encode_held(seq) if held is not None
                       else (HELD_KEY + seq.to_bytes(8, "big"), None))
        if self._meta_dirty:
            out.append((META_KEY, str(self._next_held).encode()))
        self._forgotten, self._dirty, self._held_dirty = [], set(), set()
        self._meta_dirty = False
        return out

    def _encode_rows(self, rows: I64) -> list[tuple[bytes, bytes]]:
        """Changelog records of rows (columns gathered at once, not per row)."""
        t = self.table
        r = rows.tolist()
        clicks: list[int | None] = [None if c == NONE else c for c in t.click_ts[rows].tolist()]
        stored = map(StoredPrediction, [t.pid[i] for i in r], [t.request_id[i] for i in r],
                     [t.user_id[i] for i in r], [t.item_id[i] for i in r],
                     [t.model_id[i] for i in r], t.score[rows].tolist(), t.ts[rows].tolist(),
                     t.served[rows].tolist(),
                     [_raw(b"{" + t.fields_json[i] + b"}") for i in r],
                     [_raw_or_none(t.user_snapshot[i]) for i in r],
                     [_raw_or_none(t.item_snapshot[i]) for i in r],
                     [_raw_or_none(_braced(t.waiting[i])) for i in r],
                     t.final[rows].tolist(), t.label[rows].tolist(), t.version[rows].tolist(),
                     t.observed[rows].tolist(),
                     clicks,
                     t.extra[rows].tolist(), t.late[rows].tolist(),
                     [t.twin[i] for i in r] if t.n_shadows else [None] * len(r))
        return [(PREDICTION_KEY + t.pid[i].encode(), encode(sp))
                for i, sp in zip(r, stored, strict=True)]

    def _encode_held(self, seq: int) -> tuple[bytes, bytes]:
        held = self._held[seq]
        return (HELD_KEY + seq.to_bytes(8, "big"),
                encode(StoredHeld(seq, held.due_ms, _raw(held.json))))

    def restore(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Rebuild the state from the changelog's latest value per key (no tombstones)."""
        from events.contracts import decode_click

        preds: list[StoredPrediction] = []
        for key, value in records:
            tag = key[:1]
            if tag == PREDICTION_KEY:
                preds.append(decode_prediction(value))
            elif tag == HELD_KEY:
                held = decode_held(value)
                click = decode_click(bytes(held.click))
                self._held[held.seq] = _Held(click, bytes(held.click), held.due_ms)
                self._push(held.seq)
                if held.due_ms > click.ts + 1:
                    self._index_held(held.seq, click)
            elif tag == META_KEY:
                self._next_held = max(self._next_held, int(value))
        if not preds:
            return
        table = self.table
        rows = table.add([p.prediction_id for p in preds], [p.request_id for p in preds],
                         [p.user_id for p in preds], [p.item_id for p in preds],
                         [p.model_id for p in preds], np.array([p.score for p in preds]),
                         np.array([p.ts for p in preds], dtype=np.int64),
                         np.array([p.served for p in preds], dtype=np.bool_))
        for row, p in zip(rows.tolist(), preds, strict=True):
            table.fields_json[row] = bytes(p.fields)[1:-1]
            table.user_snapshot[row] = _bytes_or_none(p.user)
            table.item_snapshot[row] = _bytes_or_none(p.item)
            waiting = _bytes_or_none(p.waiting)
            table.waiting[row] = None if waiting is None else waiting[1:-1]
            table.final[row], table.label[row], table.version[row] = p.final, p.label, p.version
            table.observed[row] = p.observed
            table.click_ts[row] = NONE if p.click_ts is None else p.click_ts
            table.extra[row], table.late[row] = p.extra, p.late
            table.seq[row] = -1  # arrived before any record processed from now on
            if not p.served and p.twin is not None:
                table.twin[row] = p.twin
                table.twin_state[row] = TWIN_LINKED if p.twin else TWIN_ORPHAN
        if table.n_shadows:
            self._relink(rows)
        self._schedule(rows)

    def _relink(self, rows: I64) -> None:
        """Rebuild the followers of restored linked shadows."""
        table = self.table
        linked = rows[(table.twin_state[rows] == TWIN_LINKED) & ~table.final[rows]]
        for row in linked.tolist():
            twin = table.by_pid.get(table.twin[row] or "")
            if twin is None or table.final[twin]:  # (a changelog cut mid-batch) look again:
                table.twin_state[row], table.twin[row] = TWIN_PENDING, None  # catch up
            else:
                self._followers.setdefault(twin, []).append(row)


def _braced(inner: bytes | None) -> bytes | None:
    return None if inner is None else b"{" + inner + b"}"


def _discard(index: dict[Any, set[int]], key: Any, seq: int) -> None:
    waiting = index.get(key)
    if waiting is not None:
        waiting.discard(seq)
        if not waiting:
            del index[key]


def _raw(data: bytes) -> msgspec.Raw:
    return msgspec.Raw(data)


def _raw_or_none(data: bytes | None) -> msgspec.Raw:
    return _raw(b"null" if data is None else data)


def _bytes_or_none(raw: msgspec.Raw) -> bytes | None:
    data = bytes(raw)
    return None if data == b"null" else data


_UNSET = msgspec.UNSET
