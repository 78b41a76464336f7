"""The batch processors the Faust agents (and the replay runner) drive.

They turn a batch of raw input records into state writes and output records, with no
Faust or Kafka in sight, so that the stream workers and ``freshet replay`` run
exactly the same code. Per batch, each touched key's state is written once and its
feature record published once (not once per event).

Users live in the partition of the input topics (both keyed by ``user_id``). Items
need the stream re-keyed by ``item_id``: the user side forwards every accepted event
to the items repartition topic, one message per target partition per batch (the
partition an ``item_id`` key hashes to), and the item side applies it there.

Exactly-once state under at-least-once delivery: every key's stored state remembers
the last input offset it has applied per *provenance* (an input topic for users; an
input topic and its partition for items, since a repartition partition merges all
of them). A record redelivered after a crash (its offset not yet committed) is
recognised by that offset and not applied again; its key's current state and record
are re-sent instead, so that nothing the crash cut off is lost and outputs stay
idempotent (same key, same content).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from events.contracts import (
    Click,
    ContractError,
    Prediction,
    decode_click,
    decode_prediction,
    parse_click,
    parse_prediction,
)
from events.timing import InputWatermark
from features.featureset import FeatureSet
from streams.records import (
    SOURCES,
    BatchResult,
    Counters,
    InputRecord,
    Output,
    batched_outputs,
    dead_letter,
    latest,
)

if TYPE_CHECKING:
    from streams.labelstage import LabelStage

#: Key of a partition's watermark and input positions in the user table: longer than
#: any entity id may be (events.contracts.MAX_ID_LEN), so it names no user.
META_KEY = "~freshet~partition~" + "~" * 256
Event = Prediction | Click
_DECODERS: dict[str, Callable[[bytes], Event]] = {
    "clicks": decode_click,
    "predictions": decode_prediction,
}
_PARSERS: dict[str, Callable[[dict[str, Any]], Event]] = {
    "clicks": parse_click,
    "predictions": parse_prediction,
}


class StateCache:
    """Decoded states of recently used keys, so a hot key is not decoded every batch.

    It only ever holds what the store holds (every change is written through at the
    end of its batch); the app clears it when partitions are revoked, since another
    worker may then change those keys.
    """

    def __init__(self, max_keys: int = 200_000) -> None:
        self.max_keys = max_keys
        self._data: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self._data.get(key)

    def put(self, key: str, state: dict[str, Any]) -> None:
        if len(self._data) >= self.max_keys:
            self._data.clear()  # crude but bounded; the store is the truth
        self._data[key] = state

    def drop(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


class EntityUpdater:
    """Applies events to one entity's states for one batch, with offset dedupe.

    Stored value per key: ``{"f": feature state, "o": {provenance: last offset}}``.
    """

    def __init__(self, features: FeatureSet, read: Callable[[int, str], bytes | None],
                 output_topic: str, counters: Counters) -> None:
        self.features = features
        self.read = read
        self.output_topic = output_topic
        self.counters = counters
        self.cache = StateCache()
        self._dirty: dict[str, tuple[int, dict[str, Any]]] = {}

    def load(self, partition: int, key: str) -> dict[str, Any]:
        """The state of ``key``: decoded from the cache, the store, or a fresh one."""
        state = self.cache.get(key)
        if state is None:
            raw = self.read(partition, key)
            state = {"f": self.features.new_state(), "o": {}} if raw is None else orjson.loads(raw)
            self.cache.put(key, state)
        return state

    def apply(self, key: str, partition: int, provenance: str, offset: int, source: str,
              event: Event, watermark_ms: int | None) -> dict[str, Any]:
        """Apply one event unless its offset shows it was applied already; the state."""
        state = self.load(partition, key)
        applied = state["o"].get(provenance)
        if applied is not None and offset <= applied:
            self.counters.duplicates += 1  # redelivered after a crash: re-send, not re-apply
        else:
            self.features.update(state["f"], source, event, watermark_ms)
            state["o"][provenance] = offset
        self._dirty[key] = (partition, state)
        return state

    def snapshot(self, key: str, state: dict[str, Any]) -> dict[str, Any]:
        """A point-in-time copy of a key's features: values, as-of time, provenance."""
        partition = self._dirty[key][0]
        f = state["f"]
        return {"as_of_ts": f["as_of_ts"], "features": self.features.values(f),
                "source": {"partition": partition, **state["o"]}}

    def finish(self, result: BatchResult) -> None:
        """Add one state write and one feature record per touched key; reset."""
        features = self.features
        for key, (partition, state) in self._dirty.items():
            result.writes[(partition, key)] = state
            record = features.record(key, state["f"])
            record["source"] = {"partition": partition, **state["o"]}
            result.outputs.append(Output(self.output_topic, key.encode(), orjson.dumps(record)))
        published = self.counters.features_published
        published[features.entity] = published.get(features.entity, 0) + len(self._dirty)
        self._dirty = {}


class UserProcessor:
    """Input topics -> user features, dead letters, and events forwarded for items."""

    def __init__(self, users: FeatureSet, read_user_state: Callable[[int, str], bytes | None],
                 allowed_lateness_ms: int, item_partition: Callable[[str], int] | None,
                 counters: Counters | None = None, labels: LabelStage | None = None) -> None:
        self.counters = counters or Counters()
        self.users = EntityUpdater(users, read_user_state, "features_user", self.counters)
        self.allowed_lateness_ms = allowed_lateness_ms
        self.item_partition = item_partition
        self.labels = labels
        self.watermarks: dict[int, InputWatermark] = {}
        #: per partition, the wall-clock ms when its max event time last grew
        self.last_progress_wall_ms: dict[int, int] = {}
        #: per (partition, source), the wall-clock ms when that input's max last grew
        self.source_progress_wall_ms: dict[tuple[int, str], int] = {}
        #: the last input offset processed per (source topic, partition)
        self.positions: dict[tuple[str, int], int] = {}
        #: the positions restored from the table: records up to them were processed
        #: before a restart (their offsets may not have been committed), so they are
        #: not late, whatever the restored watermark says; key dedupe handles them
        self.restored: dict[tuple[str, int], int] = {}

    def watermark(self, partition: int) -> InputWatermark:
        """The partition's input watermark (restored from the table on first use)."""
        wm = self.watermarks.get(partition)
        if wm is None:
            wm = self.watermarks[partition] = InputWatermark(SOURCES, self.allowed_lateness_ms)
            raw = self.users.read(partition, META_KEY)
            if raw is not None:
                meta = orjson.loads(raw)
                wm.max_event_ms.update(meta["max"])
                if meta["wm"] is not None:
                    wm.advance_to(meta["wm"])
                for source, offset in meta["pos"].items():
                    self.positions.setdefault((source, partition), offset)
                    self.restored[(source, partition)] = offset
        return wm

    def restore(self, partition: int, now_wall_ms: int) -> None:
        """Load an assigned partition's watermark and positions, before any input comes.

        A worker that restarts after its inputs were fully read still has labels to
        close: with this, the idle advance can move their partition's watermark.
        """
        if partition not in self.watermarks:
            self.watermark(partition)
            self.last_progress_wall_ms.setdefault(partition, now_wall_ms)
            for source in SOURCES:
                self.source_progress_wall_ms.setdefault((partition, source), now_wall_ms)

    def forget(self, partitions: set[int]) -> None:
        """Drop what is kept in memory for partitions this worker no longer owns."""
        for partition in partitions:
            self.watermarks.pop(partition, None)
            self.last_progress_wall_ms.pop(partition, None)
            for source in SOURCES:
                self.source_progress_wall_ms.pop((partition, source), None)
            for source in (*SOURCES, "item_snapshots"):
                self.positions.pop((source, partition), None)
                self.restored.pop((source, partition), None)

    def resume_position(self, source: str, partition: int) -> int | None:
        """The last offset of ``source`` in ``partition`` known processed (None: none)."""
        return latest((source, partition), self.positions, self.restored)

    def meta(self, partition: int) -> dict[str, Any]:
        """What :meth:`watermark` restores: max event times, watermark, positions."""
        wm = self.watermark(partition)
        # Positions never go back below the restored ones: the restored max event
        # times stem from those records (a restart re-reads from the committed ones).
        pos = {s: p for s in (*SOURCES, "item_snapshots")
               if (p := self.resume_position(s, partition)) is not None}
        return {"max": dict(wm.max_event_ms), "wm": wm.value_ms, "pos": pos}

    def process(self, batch: Sequence[InputRecord], now_wall_ms: int = 0) -> BatchResult:
        """Apply a batch of input records in order; see the module docstring."""
        result = BatchResult()
        counters = self.counters
        outputs = result.outputs
        users = self.users
        labels = self.labels
        item_partition = self.item_partition
        forwards: dict[int, list[Any]] = {}
        touched: set[int] = set()
        read: set[int] = set()
        for rec in batch:
            if rec.source == "item_snapshots":
                self.watermark(rec.partition)  # restores positions: set this one after
                self.positions[(rec.source, rec.partition)] = rec.offset
                read.add(rec.partition)
                if labels is not None:
                    for snap in orjson.loads(rec.value)["snapshots"]:
                        labels.on_item_snapshot(snap["user_id"], rec.partition, snap)
                continue
            counters.events[rec.source] += 1
            wm = self.watermark(rec.partition)  # restores positions: set this one after
            self.positions[(rec.source, rec.partition)] = rec.offset
            read.add(rec.partition)
            try:
                event = _DECODERS[rec.source](rec.value)
            except ContractError as exc:
                counters.dead_letters += 1
                outputs.append(dead_letter(rec, exc.reason))
                continue
            if wm.is_late(event.ts) and rec.offset > self.restored.get(
                    (rec.source, rec.partition), -1):
                counters.late_events += 1
                counters.dead_letters += 1
                outputs.append(dead_letter(
                    rec, f"late event: ts {event.ts} is behind the watermark {wm.value_ms} "
                         f"(allowed lateness {self.allowed_lateness_ms} ms)"))
                continue
            before = wm.max_event_ms[rec.source]
            watermark = wm.observe(rec.source, event.ts)
            if before is None or event.ts > before:
                self.last_progress_wall_ms[rec.partition] = now_wall_ms
                self.source_progress_wall_ms[(rec.partition, rec.source)] = now_wall_ms
            touched.add(rec.partition)
            state = users.apply(event.user_id, rec.partition, rec.source, rec.offset, rec.source,
                                event, watermark)
            if labels is not None:
                snapshot = (users.snapshot(event.user_id, state)
                            if isinstance(event, Prediction) else None)
                labels.on_event(event.user_id, rec.partition, rec.source, rec.offset, event,
                                watermark, snapshot)
            if item_partition is not None:
                target = item_partition(event.item_id)
                forwards.setdefault(target, []).append(
                    [rec.source, rec.partition, rec.offset, event.to_dict()])
        if labels is not None:
            for partition in sorted(touched):
                wm_value = self.watermarks[partition].value_ms
                if wm_value is not None:
                    labels.on_watermark(partition, wm_value)
            labels.finish(result)
        users.finish(result)
        for partition in read:
            self.last_progress_wall_ms.setdefault(partition, now_wall_ms)
            for source in SOURCES:
                self.source_progress_wall_ms.setdefault((partition, source), now_wall_ms)
            result.writes[(partition, META_KEY)] = self.meta(partition)
        # Each forward carries its origin partition's watermark, so that the item side
        # knows the oldest event any origin can still send.
        watermarks = {str(p): wm.value_ms for p, wm in self.watermarks.items()}
        for target, entries in forwards.items():
            outputs.extend(batched_outputs("items_repartition", target, entries,
                                           lambda part: {"wm": watermarks, "events": part}))
        return result


def advance_idle(processor: UserProcessor, now_wall_ms: int, idle_ms: int,
                 caught_up: Callable[[int, str], bool] = lambda partition, source: True
                 ) -> BatchResult:
    """Move watermarks past idle inputs with the wall clock; close due labels.

    An input topic of a partition whose max event time has not grown for ``idle_ms``
    of wall time, and that has nothing left to read (``caught_up(partition,
    source)``), is idle: it holds the partition's watermark back no longer, which
    then follows the other input alone; when every input is idle, the watermark
    advances with the wall time elapsed since the partition last made progress
    (never backwards). So labels still close when traffic stops, or when one input
    stops while the other goes on. An input with unread records (a backlog, or a
    rebalance pause) is never idle.
    """
    result = BatchResult()
    labels = processor.labels
    for partition, wm in processor.watermarks.items():
        last = processor.last_progress_wall_ms.get(partition)
        if last is None:
            continue
        active: list[int | None] = []
        seen: list[int] = []
        for source, max_ms in wm.max_event_ms.items():
            if max_ms is not None:
                seen.append(max_ms)
            if not caught_up(partition, source):
                # unread records: behind, not idle (idle time starts once caught up)
                processor.source_progress_wall_ms[(partition, source)] = now_wall_ms
                processor.last_progress_wall_ms[partition] = now_wall_ms
                active.append(max_ms)
                continue
            quiet_since = processor.source_progress_wall_ms.get((partition, source), now_wall_ms)
            if max_ms is not None and now_wall_ms - quiet_since < idle_ms:
                active.append(max_ms)
        if not seen or None in active:
            continue
        if active:
            target = min(m for m in active if m is not None) - wm.allowed_lateness_ms
        elif now_wall_ms - last >= idle_ms:
            target = max(seen) - wm.allowed_lateness_ms + (now_wall_ms - last)
        else:
            continue
        if wm.value_ms is None or target > wm.value_ms:
            wm.advance_to(target)
            result.writes[(partition, META_KEY)] = processor.meta(partition)
            if labels is not None:
                labels.on_watermark(partition, target)
    if labels is not None:
        labels.finish(result)
    return result


class ItemProcessor:
    """Items repartition topic -> item features (state lives with the item key)."""

    def __init__(self, items: FeatureSet, read_item_state: Callable[[int, str], bytes | None],
                 counters: Counters, partitions: int, snapshots: bool = True,
                 user_partition: Callable[[str], int] = lambda user_id: 0) -> None:
        self.counters = counters
        self.snapshots = snapshots
        self.user_partition = user_partition
        self.items = EntityUpdater(items, read_item_state, "features_item", counters)
        self.partitions = partitions
        self.origin_watermarks: dict[int, int] = {}
        #: last repartition offset processed per partition, here and before a restart
        self.positions: dict[int, int] = {}
        self.restored: dict[int, int] = {}

    def resume_position(self, partition: int) -> int | None:
        """The last repartition offset of ``partition`` known processed (None: none)."""
        if partition not in self.positions and partition not in self.restored:
            raw = self.items.read(partition, META_KEY)
            if raw is not None:
                self.restored[partition] = orjson.loads(raw)["pos"]["items_repartition"]
        return latest(partition, self.positions, self.restored)

    def forget(self, partitions: set[int]) -> None:
        """Drop the positions of partitions this worker no longer owns."""
        for partition in partitions:
            self.positions.pop(partition, None)
            self.restored.pop(partition, None)

    def watermark(self) -> int | None:
        """The oldest event time any origin partition can still forward (None: unknown)."""
        known = self.origin_watermarks
        return min(known.values()) if len(known) == self.partitions else None

    def process(self, batch: Sequence[InputRecord]) -> BatchResult:
        """Apply a batch of forwarded events in order.

        Each prediction's item features go back to its user's partition: one
        ``item_snapshots`` message per user partition per batch, not one per prediction.
        """
        result = BatchResult()
        items = self.items
        known = self.origin_watermarks
        snapshots: dict[int, list[dict[str, Any]]] = {}
        for rec in batch:
            if rec.partition not in self.positions:
                self.resume_position(rec.partition)  # restore before overwriting
            self.positions[rec.partition] = rec.offset
            body = orjson.loads(rec.value)
            watermark = self.watermark()
            for source, origin, offset, fields in body["events"]:
                event = _PARSERS[source](fields)
                state = items.apply(event.item_id, rec.partition, f"{source}:{origin}", offset,
                                    source, event, watermark)
                if self.snapshots and isinstance(event, Prediction):
                    snap = {"prediction_id": event.prediction_id, "prediction_ts": event.ts,
                            "user_id": event.user_id,
                            "features": items.snapshot(event.item_id, state)}
                    snapshots.setdefault(self.user_partition(event.user_id), []).append(snap)
            for origin, wm in body["wm"].items():
                if wm is not None and wm > known.get(int(origin), wm - 1):
                    known[int(origin)] = wm
        for partition, snaps in snapshots.items():
            result.outputs.extend(batched_outputs("item_snapshots", partition, snaps,
                                                  lambda part: {"snapshots": part}))
        items.finish(result)
        for partition in {rec.partition for rec in batch}:
            result.writes[(partition, META_KEY)] = {
                "pos": {"items_repartition": self.resume_position(partition)}}
        return result
