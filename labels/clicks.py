"""Clicks of the label engine: held until due, attributed down the tiers, applied.

A click is held (:class:`~labels.state.HeldClick`, by arrival number) on a heap in
(due, ts, content) order until the watermark passes it; then it walks the attribution
tiers (:meth:`Clicks._resolve`: its ``prediction_id``, its ``request_id`` + ``item_id``,
the latest prediction of its item; the rules are in :mod:`labels.engine`). A click
whose explicit ids name nothing yet waits until ``click.ts + skew + 1``, indexed by
those ids so that the named prediction's arrival makes it due at once
(:meth:`Clicks._wake_held`). A click is applied to its row after the row's own earlier
deadlines (:meth:`Clicks._catch_up`): it makes the label positive, or is a late or an
extra click record. With ``eager_clicks`` (not in ``observe_then_correct``) a click
whose ``prediction_id`` names an open prediction that arrived before it is applied on
arrival. A click naming a shadow goes to the shadow's served prediction at its release
(:meth:`~labels.shadows.ShadowTwins._served_of`).
"""

from __future__ import annotations

import heapq
from typing import Any, Final, Literal

import msgspec
import numpy as np

from events.contracts import Click
from labels.config import MODE_OBSERVE_THEN_CORRECT
from labels.pending import FORGET, NONE, OBSERVE
from labels.records import ClickOnPrediction, encode, unattributed
from labels.state import I64, POSITIVE_KIND, EngineState, HeldClick

REASON_UNKNOWN_PREDICTION_ID: Final = "unknown_prediction_id"
REASON_UNKNOWN_REQUEST_ID: Final = "unknown_request_id"
REASON_NO_PREDICTION: Final = "no_prediction"
REASON_SHADOW_PREDICTION_ID: Final = "shadow_prediction_id"


def tiebreak(click: Click) -> str:
    """A content key ordering clicks with the same due watermark and ts.

    >>> tiebreak(Click("u", "i", 1, click_id="c7"))
    'c7\\x1f\\x1f\\x1fi'
    """
    return "\x1f".join((click.click_id or "", click.prediction_id or "",
                        click.request_id or "", click.item_id))


class Clicks(EngineState):
    """The click part of :class:`~labels.engine.LabelEngine` (see the module doc)."""

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
        self._held[held_seq] = HeldClick(click, click_json, click.ts + 1)
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
        # A run of clicks that each make a label positive is emitted in one call (one
        # call per click was most of a replay's click cost); any other output flushes
        # the run first. Shadows mirror their twin's records as they are made: not then.
        self._batch_positives = (self.config.mode != MODE_OBSERVE_THEN_CORRECT
                                 and not self.table.n_shadows)
        try:
            while heap and heap[0][0] <= watermark_ms:
                due, _, _, seq = heapq.heappop(heap)
                entry = held.get(seq)
                if entry is None or entry.due_ms != due:
                    continue  # stale: moved or resolved
                self._on_due_click(seq, entry)
        finally:
            self._batch_positives = False
        if self._positives:
            self._flush_positives()

    def _on_due_click(self, seq: int, held: HeldClick) -> None:
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
                row = self._served_of(shadow, click.ts)
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
        if self._batch_positives:
            # emitted with the run (see _advance_clicks); what the next clicks read now
            self._positives.append((row, at, at - ts))
            table.final[row] = True
            table.label[row] = 1
        elif cfg.mode != MODE_OBSERVE_THEN_CORRECT:
            self._emit_bulk(one, 1, POSITIVE_KIND[cfg.mode], final=True,
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
                                   self.config.window_ms, label, msgspec.Raw(click_json))
        self._out(kind, table.pid[row], encode(record))

    # -- held clicks named by a new prediction --------------------------------------

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


def _discard(index: dict[Any, set[int]], key: Any, seq: int) -> None:
    waiting = index.get(key)
    if waiting is not None:
        waiting.discard(seq)
        if not waiting:
            del index[key]
