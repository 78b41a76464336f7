"""The natural-label state machine: one user's predictions + clicks -> label records.

The stream layer keeps one JSON state per user (table key ``user_id``) and calls
:class:`LabelMachine` with it; the machine mutates the state in place and returns the
:class:`~labels.outputs.Output` records to publish. Time is event time in integer ms;
windows are half-open. Every entry point takes the partition watermark (after the event
was accounted for) and first catches the state up to it.

Timeline. Everything the machine does is an item on an event-time timeline, acted on in
order of its *due* watermark, then clicks before prediction deadlines, then by time:

- a click is considered once ``watermark > click.ts`` (due ``click.ts + 1``): every
  prediction with ``ts <= click.ts`` has then been seen, and clicks are taken in
  event-time order, so "the first matching click" is the earliest click;
- a click whose explicit ids (``prediction_id``, else ``request_id`` + ``item_id``)
  name no eligible prediction yet is *held* until ``watermark > click.ts + skew_ms``;
  if the named prediction arrives meanwhile the click is attributed at once; when
  released it walks the remaining tiers (request, then latest-prediction fallback),
  else it is ``unattributed`` (see :mod:`labels.attribution`);
- a prediction deadline at event time ``d`` (observation end, window end) is acted on
  once ``watermark >= d + skew_ms``, after every click with ``ts < d``, held ones
  included, has been attributed; the label's ``label_ts`` is still ``d``;
- a final prediction is forgotten once ``watermark >= pred.ts + window_ms +
  late_horizon_ms + skew_ms``; until then its clicks are ``extra_click`` (in window) or
  ``late_click`` (``click.ts >= pred.ts + window_ms``) outputs, never lost.

State: a JSON dict, mutated in place (write it back after each call; delete the table
key when :meth:`LabelMachine.is_empty`). ``predictions`` maps ``prediction_id`` to its
record: open ones keep the prediction dict (with logged ``features``) and the
``snapshot``; final ones keep only core fields, the label and click counters until
forgotten. ``held`` has the clicks not yet attributed; ``due`` and ``open`` are the
timeline heaps of :mod:`labels.schedule`; ``next_ms`` / ``open_ms`` cache
:meth:`~LabelMachine.next_deadline_ms` / :meth:`~LabelMachine.earliest_open_ts_ms`;
``watermark_ms`` is the highest watermark seen (a lower one passed in is ignored).
A ``prediction_id`` already in the state is reported as ``duplicate_prediction``
(a redelivery) and changes nothing; one redelivered after it was forgotten would be
labelled again from version 1 (it would be far behind the watermark).

Order independence: if no event arrives behind the watermark it is processed with
(``ts >= watermark``), every output -- label values, kinds, versions, ``label_ts``,
``delay_ms`` -- is the same whatever the arrival order. Late events are still handled
(a late prediction is closed at once, a late click attributed against what is left),
but may then differ from an in-order run.

Eager clicks (``LabelConfig.eager_clicks``). Waiting for the watermark costs a positive
label at least the allowed lateness. With ``eager_clicks``, a click whose
``prediction_id`` names a prediction already seen, still open, not clicked yet, with
the click eligible and inside its window, is applied the moment it arrives: the
``positive`` (``late_positive`` in ``early_negative`` mode) goes out at once. (Mode
``observe_then_correct`` ignores the setting: its labels come at the observation
deadline anyway.) Label values, kinds and versions are unchanged; what can
then depend on arrival order is *which* click counts as the first one -- and so
``delay_ms`` and ``label_ts`` -- when a prediction gets several clicks that arrive
out of event-time order (all within the allowed lateness).

A click before its prediction (explicit ids, within ``skew_ms``) counts as in the
window; its ``delay_ms`` is clamped to 0 and ``label_ts`` to ``pred.ts``.

Modes (``LabelConfig.mode``) and the training rule each serves:

- ``wait``: train only on settled labels. One label per prediction, final:
  ``positive`` (1, at the first click) or ``negative`` (0, at window close).
- ``early_negative``: fake-negative weighting / calibration (Ktena et al. 2019): every
  impression is a negative at once, and a click later adds a positive duplicate.
  ``early_negative`` (0, version 1, ``final=False``, ``label_ts = pred.ts``) when the
  prediction is seen; then ``late_positive`` (1, version 2, final) at the first click,
  or ``negative`` (0, version 2, final) at window close.
- ``observe_then_correct``: ES-DFM / DEFER: wait a short observation window, train on
  what was seen, correct later. At ``pred.ts + observe_ms``: ``observed_positive``
  (1, version 1, final) if clicked by then, else ``observed_negative`` (0, version 1,
  ``final=False``); then ``late_positive`` (1, version 2, final) at a later in-window
  click, or ``real_negative`` (0, version 2, final) at window close.

So every prediction ends with exactly one ``final=True`` label, versions start at 1 and
increase by one, and a ``training_example`` output goes with every final label (and with
non-final ones too when ``LabelConfig.provisional_examples``).
"""

from __future__ import annotations

from typing import Any

from events.contracts import SCHEMA_VERSION, Click, Prediction
from labels.attribution import Rules, eligible, names, resolve
from labels.config import MODE_EARLY_NEGATIVE, MODE_OBSERVE_THEN_CORRECT, LabelConfig
from labels.outputs import (
    Output,
    click_record,
    core,
    label_record,
    training_example,
    unattributed_record,
)
from labels.schedule import CLICK, OPEN, Schedule

#: Version of the state layout below (stored in the state as ``"format"``).
STATE_FORMAT = 1

_CLOSE_KIND = {
    "wait": "negative",
    MODE_EARLY_NEGATIVE: "negative",
    MODE_OBSERVE_THEN_CORRECT: "real_negative",
}
_POSITIVE_KIND = {"wait": "positive", MODE_EARLY_NEGATIVE: "late_positive"}


class LabelMachine:
    """Joins one user's predictions and clicks into label records (state passed in).

    >>> m = LabelMachine(LabelConfig(window_ms=60_000, skew_ms=0))
    >>> s = m.new_state()
    >>> p = Prediction("p1", "r1", "u1", "i1", "m1", 0.3, 1_000_000)
    >>> m.on_prediction(s, p, watermark_ms=1_000_000)
    []
    >>> out = m.on_click(s, Click("u1", "i1", 1_020_000), watermark_ms=1_020_001)
    >>> [(o.kind, o.record["kind"]) for o in out if o.kind == "label"]
    [('label', 'positive')]
    >>> out[0].record["delay_ms"], out[1].kind
    (20000, 'training_example')
    >>> m.next_deadline_ms(s), m.is_empty(s)
    (4660000, False)
    >>> m.on_watermark(s, 2**62), m.is_empty(s)
    ([], True)
    """

    def __init__(self, config: LabelConfig) -> None:
        self._cfg = config
        self._rules = Rules(config.window_ms, config.skew_ms, config.late_horizon_ms)
        self._schedule = Schedule(config)
        # observe_then_correct labels at the observation deadline anyway, and an eager
        # click there could change a label's kind (observed vs late positive)
        self._eager_clicks = config.eager_clicks and config.mode != MODE_OBSERVE_THEN_CORRECT

    @property
    def config(self) -> LabelConfig:
        """The machine's configuration.

        >>> LabelMachine(LabelConfig(mode="early_negative")).config.mode
        'early_negative'
        """
        return self._cfg

    def new_state(self) -> dict[str, Any]:
        """An empty, JSON-serializable state for one user.

        >>> sorted(LabelMachine(LabelConfig()).new_state())  # doctest: +NORMALIZE_WHITESPACE
        ['due', 'format', 'held', 'next_ms', 'open', 'open_ms', 'predictions', 'seq',
         'watermark_ms']
        """
        return {
            "format": STATE_FORMAT,
            "watermark_ms": None,
            "next_ms": None,
            "open_ms": None,
            "seq": 0,
            "predictions": {},
            "held": {},
            "due": [],
            "open": [],
        }

    # -- entry points -------------------------------------------------------------------

    def on_prediction(
        self,
        state: dict[str, Any],
        pred: Prediction,
        watermark_ms: int | None,
        snapshot: dict[str, Any] | None = None,
    ) -> list[Output]:
        """Open a pending label for ``pred`` (``snapshot``: point-in-time features).

        >>> m = LabelMachine(LabelConfig(mode="early_negative"))
        >>> s = m.new_state()
        >>> out = m.on_prediction(s, Prediction("p1", "r", "u", "i", "m", 0.5, 10**12), None)
        >>> [(o.record["kind"], o.record["final"]) for o in out]
        [('early_negative', False)]
        >>> m.on_prediction(s, Prediction("p1", "r", "u", "i", "m", 0.5, 10**12), None)[0].kind
        'duplicate_prediction'
        """
        pd = pred.to_dict()
        preds = state["predictions"]
        if pred.prediction_id in preds:
            dup = dict(pd, reason="duplicate prediction_id", schema_version=SCHEMA_VERSION)
            out = [Output("duplicate_prediction", pred.prediction_id, dup)]
            return out + self._advance(state, watermark_ms)
        rec: dict[str, Any] = {
            "pred": pd,
            "snapshot": None if snapshot is None else dict(snapshot),
            "final": False,
            "label": None,
            "label_version": 0,
            "observed": False,
            "click_ts": None,
            "extra_clicks": 0,
            "late_clicks": 0,
        }
        preds[pred.prediction_id] = rec
        out = []
        if self._cfg.mode == MODE_EARLY_NEGATIVE:
            self._emit(rec, out, 0, "early_negative", final=False, label_ts=pred.ts, delay=None)
        self._schedule.push(state, OPEN, pred.prediction_id)
        self._schedule.push_open(state, pred.ts, pred.prediction_id)
        for key, held in state["held"].items():
            click = held["click"]
            if held["due_ms"] > click["ts"] + 1 and names(click, pd, self._rules):
                held["due_ms"] = click["ts"] + 1  # its prediction is here: attribute it now
                self._schedule.push(state, CLICK, key)
        out.extend(self._advance(state, watermark_ms))
        return out

    def on_click(
        self, state: dict[str, Any], click: Click, watermark_ms: int | None
    ) -> list[Output]:
        """Take a click; it is attributed once the watermark has passed its ``ts``.

        >>> m = LabelMachine(LabelConfig(skew_ms=0))
        >>> s = m.new_state()
        >>> m.on_click(s, Click("u", "i", 10**12), watermark_ms=10**12)   # not yet passed
        []
        >>> m.on_watermark(s, 10**12 + 1)[0].record["reason"]
        'no_prediction'
        """
        if self._eager_clicks and click.prediction_id is not None:
            out = self._advance(state, watermark_ms)  # clicks due before this one first
            eager = self._eager(state, click)
            if eager is not None:
                return out + eager
            return out + self._hold(state, click, watermark_ms)
        return self._hold(state, click, watermark_ms)

    def _hold(self, state: dict[str, Any], click: Click, watermark_ms: int | None
              ) -> list[Output]:
        key = str(state["seq"])
        state["seq"] += 1
        state["held"][key] = {"click": click.to_dict(), "due_ms": click.ts + 1}
        self._schedule.push(state, CLICK, key)
        return self._advance(state, watermark_ms)

    def _eager(self, state: dict[str, Any], click: Click) -> list[Output] | None:
        """Apply an in-window click naming an open, unclicked prediction now (else None)."""
        pid = click.prediction_id
        rec = state["predictions"].get(pid) if pid is not None else None
        if rec is None or rec["final"] or rec["click_ts"] is not None:
            return None
        cd = click.to_dict()
        pred = rec["pred"]
        if not eligible(pred, cd, self._rules, explicit=True) \
                or click.ts >= pred["ts"] + self._cfg.window_ms:
            return None
        out: list[Output] = []
        before = self._schedule.item(state, OPEN, rec["pred"]["prediction_id"])
        self._apply_click(rec, cd, out)
        if self._schedule.item(state, OPEN, pred["prediction_id"]) != before:
            self._schedule.push(state, OPEN, pred["prediction_id"])
        self._schedule.settle(state)
        return out

    def on_watermark(self, state: dict[str, Any], watermark_ms: int) -> list[Output]:
        """Act on everything due at ``watermark_ms``: clicks, window closes, forgetting.

        Cheap (no scan) when nothing is due.

        >>> m = LabelMachine(LabelConfig(window_ms=1_000, skew_ms=0))
        >>> s = m.new_state()
        >>> _ = m.on_prediction(s, Prediction("p", "r", "u", "i", "m", 0.5, 10**12), None)
        >>> m.on_watermark(s, 10**12 + 999)
        []
        >>> [o.record["kind"] for o in m.on_watermark(s, 10**12 + 1_000) if o.kind == "label"]
        ['negative']
        """
        return self._advance(state, watermark_ms)

    def next_deadline_ms(self, state: dict[str, Any]) -> int | None:
        """The smallest watermark at which :meth:`on_watermark` would do something.

        >>> m = LabelMachine(LabelConfig(window_ms=1_000, skew_ms=5))
        >>> s = m.new_state()
        >>> m.next_deadline_ms(s) is None
        True
        >>> _ = m.on_prediction(s, Prediction("p", "r", "u", "i", "m", 0.5, 10**12), None)
        >>> m.next_deadline_ms(s) - 10**12
        1005
        """
        value: int | None = state["next_ms"]
        return value

    def earliest_open_ts_ms(self, state: dict[str, Any]) -> int | None:
        """The smallest ``ts`` of a prediction still without its final label, or None.

        >>> m = LabelMachine(LabelConfig())
        >>> s = m.new_state()
        >>> _ = m.on_prediction(s, Prediction("p", "r", "u", "i", "m", 0.5, 10**12), None)
        >>> m.earliest_open_ts_ms(s) == 10**12
        True
        """
        value: int | None = state["open_ms"]
        return value

    def is_empty(self, state: dict[str, Any]) -> bool:
        """True when nothing is pending, held or remembered: the table key can go.

        >>> m = LabelMachine(LabelConfig())
        >>> m.is_empty(m.new_state())
        True
        """
        return not state["predictions"] and not state["held"]

    # -- timeline -----------------------------------------------------------------------

    def _advance(self, state: dict[str, Any], watermark_ms: int | None) -> list[Output]:
        if watermark_ms is None:
            return []
        previous = state["watermark_ms"]
        wm = watermark_ms if previous is None else max(previous, watermark_ms)
        state["watermark_ms"] = wm
        if state["next_ms"] is None or state["next_ms"] > wm:
            return []
        out: list[Output] = []
        while (item := self._schedule.pop_due(state, wm)) is not None:
            if item[1] == CLICK:
                self._on_due_click(state, item[4], out)
            else:
                self._on_due_prediction(state, item[4], out)
        self._schedule.settle(state)
        return out

    # -- transitions --------------------------------------------------------------------

    def _on_due_click(self, state: dict[str, Any], key: str, out: list[Output]) -> None:
        held = state["held"][key]
        click = held["click"]
        release = self._schedule.release_ms(click)
        res = resolve(state["predictions"], click, self._rules, final=held["due_ms"] >= release)
        if res.waiting:
            held["due_ms"] = release
            self._schedule.push(state, CLICK, key)
            return
        del state["held"][key]
        if res.prediction_id is None:
            reason = res.reason or "no_prediction"
            out.append(Output("unattributed", click["user_id"], unattributed_record(click, reason)))
            return
        pid = res.prediction_id
        before = self._schedule.item(state, OPEN, pid)
        self._apply_click(state["predictions"][pid], click, out)
        if self._schedule.item(state, OPEN, pid) != before:
            self._schedule.push(state, OPEN, pid)

    def _apply_click(self, rec: dict[str, Any], click: dict[str, Any], out: list[Output]) -> None:
        cfg = self._cfg
        pred = rec["pred"]
        pid: str = pred["prediction_id"]
        if click["ts"] >= pred["ts"] + cfg.window_ms:
            rec["late_clicks"] += 1
            value = rec["label"] if rec["final"] else None
            record = click_record("late_click", pred, click, window_ms=cfg.window_ms, label=value)
            out.append(Output("late_click", pid, record))
            return
        if rec["final"] or rec["click_ts"] is not None:
            rec["extra_clicks"] += 1
            value = rec["label"] if rec["final"] else None
            record = click_record("extra_click", pred, click, window_ms=cfg.window_ms, label=value)
            out.append(Output("extra_click", pid, record))
            return
        at = max(click["ts"], pred["ts"])
        if cfg.mode != MODE_OBSERVE_THEN_CORRECT:
            kind = _POSITIVE_KIND[cfg.mode]
            self._emit(rec, out, 1, kind, final=True, label_ts=at, delay=at - pred["ts"])
            return
        if not rec["observed"] and click["ts"] < pred["ts"] + cfg.observe_ms:
            rec["click_ts"] = at  # observed_positive is emitted at the observation deadline
            return
        if not rec["observed"]:
            self._observe(rec, out)
        self._emit(rec, out, 1, "late_positive", final=True, label_ts=at, delay=at - pred["ts"])

    def _observe(self, rec: dict[str, Any], out: list[Output]) -> None:
        pred = rec["pred"]
        at = pred["ts"] + self._cfg.observe_ms
        rec["observed"] = True
        if rec["click_ts"] is None:
            self._emit(rec, out, 0, "observed_negative", final=False, label_ts=at, delay=None)
        else:
            delay = rec["click_ts"] - pred["ts"]
            self._emit(rec, out, 1, "observed_positive", final=True, label_ts=at, delay=delay)

    def _on_due_prediction(self, state: dict[str, Any], pid: str, out: list[Output]) -> None:
        rec = state["predictions"][pid]
        if rec["final"]:
            del state["predictions"][pid]  # past the late horizon: forget
            return
        if self._cfg.mode == MODE_OBSERVE_THEN_CORRECT and not rec["observed"]:
            self._observe(rec, out)
        else:
            close = rec["pred"]["ts"] + self._cfg.window_ms
            kind = _CLOSE_KIND[self._cfg.mode]
            self._emit(rec, out, 0, kind, final=True, label_ts=close, delay=None)
        self._schedule.push(state, OPEN, pid)

    def _emit(
        self,
        rec: dict[str, Any],
        out: list[Output],
        label: int,
        kind: str,
        *,
        final: bool,
        label_ts: int,
        delay: int | None,
    ) -> None:
        rec["label_version"] += 1
        pred = rec["pred"]
        record = label_record(
            pred, label=label, kind=kind, version=rec["label_version"], final=final,
            label_ts=label_ts, delay_ms=delay, window_ms=self._cfg.window_ms,
        )
        pid: str = pred["prediction_id"]
        out.append(Output("label", pid, record))
        if final or self._cfg.provisional_examples:
            example = training_example(pred, rec["snapshot"], record)
            out.append(Output("training_example", pid, example))
        if final:
            rec["final"] = True
            rec["label"] = label
            rec["pred"] = core(pred)
            rec["snapshot"] = None
