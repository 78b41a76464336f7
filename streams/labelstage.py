"""The label stage: runs the pure label machine over one partition's users.

Per user, the stored label state is ``{"m": machine state, "o": {topic: last applied
offset}, "snap": {prediction_id: item features}, "wait": {prediction_id: example}}``.
An open prediction's logged features and point-in-time user features (its
*payload*) are kept apart, under ``payload_key(prediction_id)`` in the same table,
written once and deleted with its final label, and put back into its training
example; so the state a batch rewrites stays small however many predictions of
the user are open.

- Windows close on the partition watermark: an in-memory deadline index per
  partition (rebuilt from the table the first time a partition is seen after start
  or rebalance) finds the users whose next deadline the watermark has reached.
- Training examples need the item's features as of the prediction, which live with
  the item key on the item side: the item side sends them back keyed by user
  (``item_snapshots``); an example waits in ``wait`` until they are there (and a
  snapshot that comes first waits in ``snap``).
- Delay statistics per model and label watermarks are kept in memory and published
  periodically by the app.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from typing import Any

import orjson

from events.contracts import SCHEMA_VERSION, Click, Prediction
from labels import DelayStats, LabelConfig, LabelMachine, OpenPredictions, label_watermark_ms
from labels.outputs import Output as LabelOutput
from labels.outputs import core
from streams.processor import StateCache, UserProcessor
from streams.records import BatchResult, Counters, Output

#: Machine output kind -> logical topic (None: counted, not published).
ROUTES: dict[str, str | None] = {
    "label": "labels",
    "training_example": "training_examples",
    "late_click": "late_clicks",
    "unattributed": "unattributed_clicks",
    "extra_click": None,
    "duplicate_prediction": None,
}


#: Label-table keys of open predictions' payloads start with this (longer than any
#: entity id may be, so no user key can collide with one).
PAYLOAD_PREFIX = "~freshet~payload~" + "~" * 240


def payload_key(prediction_id: str) -> str:
    """The label-table key of an open prediction's payload."""
    return PAYLOAD_PREFIX + prediction_id


def label_state_name(config: LabelConfig) -> str:
    """Table name for label state; changes with any label setting."""
    digest = hashlib.sha1(repr(config).encode(), usedforsecurity=False).hexdigest()
    return f"labels-{digest[:8]}"


class DeadlineIndex:
    """Keys by their next deadline (a lazy min-heap); pops those the watermark reached.

    >>> idx = DeadlineIndex(); idx.update("u1", 50); idx.update("u2", 10)
    >>> idx.pop_due(20), idx.pop_due(100)
    (['u2'], ['u1'])
    """

    def __init__(self) -> None:
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def update(self, key: str, deadline_ms: int | None) -> None:
        """Set (or clear, with None) ``key``'s next deadline."""
        if deadline_ms is None:
            self._due.pop(key, None)
        elif self._due.get(key) != deadline_ms:
            self._due[key] = deadline_ms
            heapq.heappush(self._heap, (deadline_ms, key))

    def pop_due(self, watermark_ms: int) -> list[str]:
        """Keys whose deadline is <= ``watermark_ms`` (removed from the index)."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= watermark_ms:
            deadline, key = heapq.heappop(heap)
            if self._due.get(key) == deadline:
                del self._due[key]
                out.append(key)
        return out


class LabelStage:
    """Feeds events and watermarks to the label machine; collects writes and outputs."""

    def __init__(self, config: LabelConfig, read: Callable[[int, str], bytes | None],
                 keys_for_partition: Callable[[int], list[str]], counters: Counters) -> None:
        self.machine = LabelMachine(config)
        self.config = config
        self.read = read
        self.keys_for_partition = keys_for_partition
        self.counters = counters
        self.delays = DelayStats()
        self.deadlines: dict[int, DeadlineIndex] = {}
        self.open: dict[int, OpenPredictions] = {}
        self.label_counts: dict[str, int] = {}
        self.cache = StateCache()
        self._dirty: dict[str, tuple[int, dict[str, Any]]] = {}
        self._outputs: list[Output] = []
        #: open predictions' payloads (see _set_aside): cached, and this batch's writes
        self._payloads: dict[str, dict[str, Any]] = {}
        self._payload_writes: dict[tuple[int, str], dict[str, Any] | None] = {}
        # how long after a prediction its item snapshot may still be useful
        self._snap_ttl_ms = config.window_ms + config.skew_ms + config.late_horizon_ms

    # -- state ---------------------------------------------------------------------
    def _load(self, partition: int, key: str) -> dict[str, Any]:
        state = self.cache.get(key)
        if state is None:
            raw = self.read(partition, key)
            state = ({"m": self.machine.new_state(), "o": {}, "snap": {}, "wait": {}}
                     if raw is None else orjson.loads(raw))
            self.cache.put(key, state)
        return state

    def _index(self, partition: int) -> DeadlineIndex:
        idx = self.deadlines.get(partition)
        if idx is None:  # first sight since start or rebalance: rebuild from the table
            idx = self.deadlines[partition] = DeadlineIndex()
            opened = self.open[partition] = OpenPredictions()
            for key in self.keys_for_partition(partition):
                if key.startswith(PAYLOAD_PREFIX):
                    continue
                raw = self.read(partition, key)
                if raw is not None:
                    m = orjson.loads(raw)["m"]
                    idx.update(key, self.machine.next_deadline_ms(m))
                    opened.update(key, self.machine.earliest_open_ts_ms(m))
        return idx

    def forget_partitions(self) -> None:
        """Drop the in-memory indexes and cache (on rebalance); rebuilt on next use."""
        self.deadlines.clear()
        self.open.clear()
        self.cache.clear()
        self._payloads.clear()

    # -- inputs --------------------------------------------------------------------
    def on_event(self, key: str, partition: int, source: str, offset: int,
                 event: Prediction | Click, watermark_ms: int | None,
                 user_snapshot: dict[str, Any] | None = None) -> None:
        """Apply a prediction or click unless its offset shows it was applied already."""
        self._index(partition)
        state = self._load(partition, key)
        applied = state["o"].get(source)
        if applied is not None and offset <= applied:
            self.counters.duplicates += 1
            self._dirty[key] = (partition, state)
            return
        if isinstance(event, Prediction):
            outs = self.machine.on_prediction(state["m"], event, watermark_ms,
                                              {"user": user_snapshot})
            self._set_aside(partition, state, event.prediction_id)
        else:
            outs = self.machine.on_click(state["m"], event, watermark_ms)
        state["o"][source] = offset
        self._route(partition, key, state, outs)
        self._dirty[key] = (partition, state)

    def _set_aside(self, partition: int, state: dict[str, Any], pid: str) -> None:
        # An open prediction's logged features and point-in-time snapshot are only
        # needed for its training example: they live under their own key, written
        # once, so a batch that touches the user does not rewrite them.
        rec = state["m"]["predictions"].get(pid)
        if rec is None or rec["final"] or rec["snapshot"] is None:
            return
        payload = {"pred": rec["pred"], "snapshot": rec["snapshot"]}
        rec["pred"], rec["snapshot"] = core(rec["pred"]), None
        self._payloads[pid] = payload
        self._payload_writes[(partition, payload_key(pid))] = payload

    def _payload(self, partition: int, pid: str) -> dict[str, Any] | None:
        payload = self._payloads.get(pid)
        if payload is None:
            raw = self.read(partition, payload_key(pid))
            payload = None if raw is None else orjson.loads(raw)
        return payload

    def on_item_snapshot(self, key: str, partition: int, body: dict[str, Any]) -> None:
        """The item's features as of a prediction, sent back by the item side."""
        self._index(partition)
        state = self._load(partition, key)
        pid = body["prediction_id"]
        waiting = state["wait"].pop(pid, None)
        if waiting is not None:
            waiting["freshet_features"]["item"] = body["features"]
            self._publish("training_examples", pid, waiting)
        elif pid not in state["snap"]:
            state["snap"][pid] = [body["prediction_ts"], body["features"]]
        self._dirty[key] = (partition, state)

    def on_watermark(self, partition: int, watermark_ms: int) -> None:
        """Close what the partition's watermark has reached."""
        for key in self._index(partition).pop_due(watermark_ms):
            state = self._load(partition, key)
            outs = self.machine.on_watermark(state["m"], watermark_ms)
            self._route(partition, key, state, outs)
            snap = state["snap"]
            for pid in [p for p, (ts, _) in snap.items() if ts + self._snap_ttl_ms < watermark_ms]:
                del snap[pid]
            self._dirty[key] = (partition, state)

    # -- outputs -------------------------------------------------------------------
    def _route(self, partition: int, key: str, state: dict[str, Any],
               outs: list[LabelOutput]) -> None:
        counts = self.label_counts
        for out in outs:
            counts[out.kind] = counts.get(out.kind, 0) + 1
            topic = ROUTES[out.kind]
            if out.kind == "label":
                self.delays.observe_output(out)
            if topic is None:
                continue
            if out.kind == "training_example":
                pid = out.record["prediction_id"]
                if out.record["freshet_features"] is None:  # its payload was set aside
                    payload = self._payload(partition, pid)
                    if payload is not None:
                        for name, value in payload["pred"].items():
                            out.record.setdefault(name, value)
                        out.record["freshet_features"] = dict(payload["snapshot"])
                if out.record["final"]:
                    self._payloads.pop(pid, None)
                    self._payload_writes[(partition, payload_key(pid))] = None
                snap = state["snap"].pop(pid, None)
                if snap is None:
                    state["wait"][pid] = out.record
                    continue
                out.record["freshet_features"]["item"] = snap[1]
            self._publish(topic, out.key, out.record)

    def _publish(self, topic: str, key: str, record: dict[str, Any]) -> None:
        self._outputs.append(Output(topic, key.encode(), orjson.dumps(record)))

    def finish(self, result: BatchResult) -> None:
        """Add this batch's state writes (None: delete) and outputs; reset."""
        machine = self.machine
        for key, (partition, state) in self._dirty.items():
            m = state["m"]
            self.deadlines[partition].update(key, machine.next_deadline_ms(m))
            self.open[partition].update(key, machine.earliest_open_ts_ms(m))
            empty = machine.is_empty(m) and not state["snap"] and not state["wait"]
            result.label_writes[(partition, key)] = None if empty else state
            if empty:
                self.cache.drop(key)
        result.label_writes.update(self._payload_writes)
        result.outputs.extend(self._outputs)
        self._dirty = {}
        self._outputs = []
        self._payload_writes = {}
        if len(self._payloads) > 100_000:
            self._payloads.clear()  # a cache only: the table has them

    def label_watermarks(self, watermarks: dict[int, int | None]) -> dict[int, int | None]:
        """Per partition: every prediction with ts < T has its final label."""
        return {p: label_watermark_ms(wm, self.open[p].earliest_ms() if p in self.open else None)
                for p, wm in watermarks.items()}


def label_report_records(users: UserProcessor, labels: LabelStage) -> list[Output]:
    """``label-watermarks`` per partition and ``model-metrics`` per model, now."""
    out = []
    wms = {p: wm.value_ms for p, wm in users.watermarks.items()}
    for partition, value in sorted(labels.label_watermarks(wms).items()):
        if value is None:
            continue
        rec = {"partition": partition, "label_watermark_ms": value,
               "watermark_ms": wms[partition], "schema_version": SCHEMA_VERSION}
        out.append(Output("label_watermarks", str(partition).encode(), orjson.dumps(rec)))
    for model_id, stats in sorted(labels.delays.snapshot().items()):
        rec = {"model_id": model_id, "click_delay": stats, "schema_version": SCHEMA_VERSION,
               "partitions": sorted(wms)}
        out.append(Output("model_metrics", model_id.encode(), orjson.dumps(rec)))
    return out
