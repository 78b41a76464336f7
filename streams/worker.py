"""The stream worker: consumer group, micro-batches through the engine, one transaction each.

Input path (chosen by measurement, see README): confluent-kafka's batch ``consume``.
The worker group (cooperative-sticky) assigns partitions of ``predictions`` and of
the items repartition topic; partition ``p`` of ``predictions`` is a *user task*:
its worker also reads partition ``p`` of ``clicks`` and of the item snapshots (a
second consumer that never joins the group), so a user's clicks, predictions,
features and pending labels always live together whatever the assignor does.

Each loop takes what the consumers have (up to ``FRESHET_BATCH_MAX_EVENTS``, waiting
at most ``FRESHET_COMMIT_INTERVAL_MS``), runs it through the engine's partitions,
and commits outputs, changelog deltas and input offsets in one transaction
(:mod:`streams.transactions`). A newly assigned partition is restored from its
changelogs first (:mod:`streams.changelog`); a revoked one is dropped. If a
transaction is aborted, every partition is restored again and its inputs re-read
from the committed offsets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from engine import InputBatch, ItemPartition, Result, UserPartition, label_reports
from engine.users import Counters
from features.catalog import Catalog
from features.records import RecordEncoder
from freshet.settings import Settings
from streams import kafka
from streams.changelog import read_changelogs
from streams.checkpoints import LocalStore, Part, now_ms
from streams.transactions import TransactionAborted, Transactions

log = logging.getLogger(__name__)

#: How often label watermarks and delay statistics are published.
REPORT_EVERY_S = 5.0


def partitioner(partitions: int) -> Callable[[str], int]:
    """The Java client's default partition of a string key (murmur2, as Kafka Streams)."""

    def partition_of(key: str) -> int:
        return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions

    return partition_of


@dataclass(slots=True)
class BatchSizes:
    """Events per processed batch (how the worker sized them: backlog vs caught up), the
    time a batch spent being processed and committed, and when input first came."""

    batches: int = 0
    events: int = 0
    smallest: int | None = None
    largest: int = 0
    last: int = 0
    #: wall-clock seconds when the first batch with input began, and the last one ended
    first_started: float | None = None
    last_ended: float | None = None
    #: recent (process, commit) durations in ms
    recent: list[tuple[float, float]] = field(default_factory=list)

    def add(self, n: int, started: float, processed: float, committed: float) -> None:
        """Count a batch of ``n`` input records (wall-clock seconds of its three steps)."""
        self.batches += 1
        self.events += n
        self.last = n
        self.largest = max(self.largest, n)
        self.smallest = n if self.smallest is None else min(self.smallest, n)
        if self.first_started is None:
            self.first_started = started
        self.last_ended = committed
        self.recent.append(((processed - started) * 1000, (committed - processed) * 1000))
        if len(self.recent) > 1000:
            del self.recent[:500]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        mean = self.events / self.batches if self.batches else None

        def p(values: list[float], q: float) -> float | None:
            return sorted(values)[int(q * (len(values) - 1))] if values else None

        process = [a for a, _ in self.recent]
        commit = [b for _, b in self.recent]
        return {"batches": self.batches, "min": self.smallest, "max": self.largest,
                "mean": mean, "last": self.last, "first_started": self.first_started,
                "last_ended": self.last_ended, "process_ms_p50": p(process, 0.5),
                "process_ms_p99": p(process, 0.99), "commit_ms_p50": p(commit, 0.5),
                "commit_ms_p99": p(commit, 0.99)}


@dataclass(slots=True)
class _Pending:
    """Records of one iteration, by partition."""

    users: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    snapshots: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    items: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    count: int = 0


class Worker:
    """One worker process's engine loop (runs in its own thread; see the module doc)."""

    def __init__(self, settings: Settings, catalog: Catalog | None = None) -> None:
        self.settings = settings
        self.catalog = catalog or settings.load_catalog()
        self.names = kafka.topic_names(settings)
        self.changelogs = kafka.changelog_topics(settings, self.catalog)
        self.partition_of = partitioner(settings.partitions)
        self.has_items = len(self.catalog.item.specs) > 0
        self.label_config = settings.label_config() if settings.labels_enabled else None
        self.counters = Counters()
        self.batch_sizes = BatchSizes()
        self.lock = threading.RLock()  # engine state vs. the web server's reads
        self.users: dict[int, UserPartition] = {}
        self.items: dict[int, ItemPartition] = {}
        self.restores = 0
        self.aborts = 0
        self.local: LocalStore | None = None  # opened by run() (FRESHET_STORE=rocksdb)
        self._last_mark = time.monotonic()
        #: changelog records written to / read from the local store and changelogs
        self.local_writes = 0
        self.changelog_records_read = 0
        #: changelog partitions restored from the local store (plus the log after it)
        self.local_restores = 0

        self._assigned: set[tuple[str, int]] = set()
        self._to_restore: set[tuple[str, int]] = set()
        self._follow_add: set[int] = set()
        self._follow_drop: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.running = False
        #: the group has assigned this worker its partitions at least once
        self.joined = False
        #: records not yet read per assigned input partition (None until known)
        self.lag: dict[tuple[str, int], int] | None = None
        self._encoders = {"user": RecordEncoder(self.catalog.user, ("clicks", "predictions")),
                          "item": RecordEncoder(self.catalog.item, [
                              f"{s}:{o}" for s in ("clicks", "predictions")
                              for o in range(settings.partitions)])}
        self._topic_kind = {self.names["predictions"]: "predictions",
                            self.names["clicks"]: "clicks",
                            self.names["item_snapshots"]: "item_snapshots",
                            self.names["items_repartition"]: "items_repartition"}

    # -- lifecycle --------------------------------------------------------------------

    def start(self, on_crash: Callable[[BaseException], None] | None = None) -> None:
        """Run the loop in a thread; ``on_crash`` is called if it dies."""

        def main() -> None:
            try:
                self.run()
            except BaseException as exc:
                self.error = exc
                log.critical("the worker loop stopped: %r", exc, exc_info=True)
                if on_crash is not None:
                    on_crash(exc)

        self._thread = threading.Thread(target=main, name="freshet-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the current batch, leave the group, and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run(self) -> None:
        """The loop (see the module doc); returns when :meth:`stop` is called."""
        s = self.settings
        started = time.monotonic()
        if s.store == "rocksdb":
            self.local = LocalStore(s.data_dir / "state" / s.app_id)
        # an idle client for offset queries (the group consumer's connection is busy
        # with long-polling fetches, which delay any other request on it)
        self.meta = Consumer(kafka.restore_consumer(s))
        self.txn = Transactions(kafka.transactional_producer(s), self.names, self.changelogs,
                                commit_delay_s=s.debug_commit_delay_ms / 1000.0)
        log.info("transactional producer %s ready in %.2f s", s.transactional_id(),
                 time.monotonic() - started)
        self.group = Consumer(kafka.group_consumer(s))
        self.follower = Consumer(kafka.follower_consumer(s))
        topics = [self.names["predictions"]]
        if self.has_items:
            topics.append(self.names["items_repartition"])
        self.group.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                             on_lost=self._on_revoke)
        self.running = True
        last_idle = last_report = time.monotonic()
        idle_every = min(1.0, max(0.05, s.idle_advance_ms / 4000))
        clean = False
        try:
            while not self._stop.is_set():
                pending = self._collect()
                now = time.monotonic()
                idle = now - last_idle >= idle_every
                report = now - last_report >= REPORT_EVERY_S
                if pending.count or idle or report:
                    self._process(pending, idle, report)
                    last_idle = now if idle else last_idle
                    last_report = now if report else last_report
            clean = True
        finally:
            self.running = False
            if clean:
                self._mark()  # a clean stop: the next start reads no changelog
            self.group.close()  # leaves the group: its partitions move at once
            self.follower.close()
            self.txn.close()
            self.meta.close()
            if self.local is not None:
                self.local.close()

    # -- assignment -------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.joined = True
        self.lag = None
        for tp in partitions:
            self._assigned.add((tp.topic, tp.partition))
            self._to_restore.add((tp.topic, tp.partition))
            if tp.topic == self.names["predictions"]:
                self._follow_add.add(tp.partition)
                self._follow_drop.discard(tp.partition)
        log.info("assigned %s", _tps(partitions))

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.lag = None
        self._mark({(tp.topic, tp.partition) for tp in partitions})
        with self.lock:
            for tp in partitions:
                self._assigned.discard((tp.topic, tp.partition))
                self._to_restore.discard((tp.topic, tp.partition))
                if tp.topic == self.names["predictions"]:
                    self.users.pop(tp.partition, None)
                    self._follow_drop.add(tp.partition)
                    self._follow_add.discard(tp.partition)
                else:
                    self.items.pop(tp.partition, None)
        log.info("revoked %s", _tps(partitions))

    def _follower_tps(self, p: int) -> list[TopicPartition]:
        """The partitions a user task reads besides ``predictions``: clicks, snapshots."""
        out = [TopicPartition(self.names["clicks"], p)]
        if self.has_items and self.label_config is not None:
            out.append(TopicPartition(self.names["item_snapshots"], p))
        return out

    def _sync_follower(self) -> None:
        if self._follow_drop:
            drop = [tp for p in sorted(self._follow_drop) for tp in self._follower_tps(p)]
            self.follower.incremental_unassign(drop)
            self._follow_drop.clear()
        if self._follow_add:
            tps = [tp for p in sorted(self._follow_add) for tp in self._follower_tps(p)]
            committed = self.group.committed(tps, timeout=30)
            start = [TopicPartition(tp.topic, tp.partition,
                                    tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                     for tp in committed]
            self.follower.incremental_assign(start)
            self._follow_add.clear()

    def _restore(self) -> None:
        """Rebuild newly assigned partitions from their changelogs, before their input."""
        s = self.settings
        users = sorted(p for t, p in self._to_restore if t == self.names["predictions"])
        items = sorted(p for t, p in self._to_restore if t == self.names["items_repartition"])
        parts = [(self.changelogs["user"], p) for p in users]
        if self.label_config is not None:
            parts += [(self.changelogs["label"], p) for p in users]
        parts += [(self.changelogs["item"], q) for q in items]
        start = self._local_states(parts)
        restored = read_changelogs(kafka.restore_consumer(s), parts, start=start)
        self.changelog_records_read += restored.records
        self.local_restores += len(start)
        states = restored.states
        with self.lock:
            for p in users:
                part = self._new_user(p)
                label = states.get((self.changelogs.get("label", ""), p), {})
                part.restore(list(states[(self.changelogs["user"], p)].items()),
                             list(label.items()))
                self.users[p] = part
            for q in items:
                item = self._new_item(q)
                item.restore(list(states[(self.changelogs["item"], q)].items()))
                self.items[q] = item
        self.restores += len(users) + len(items)
        self._to_restore.clear()
        if self.local is not None:
            now = now_ms()
            for clog in parts:
                end = restored.ends.get(clog)
                if end is None:
                    continue
                if clog in start:  # the store had it up to its mark: add what came since
                    state = restored.states[clog]
                    self.local.apply((clog, k, state.get(k)) for k in restored.changed[clog])
                    self.local.mark({clog: end}, now)
                else:
                    self.local.replace(clog, restored.states[clog], end, now)

    def _local_states(self, parts: list[Part]) -> dict[Part, tuple[dict[bytes, bytes], int]]:
        """Usable local states of changelog partitions: (state, offset to read on from)."""
        if self.local is None:
            return {}
        out = {}
        for part in parts:
            found = self.local.load(part, now_ms())
            if found is None:
                continue
            low, high = self.meta.get_watermark_offsets(TopicPartition(*part), timeout=10)
            if low <= found[1] <= high:
                out[part] = found
            else:
                log.info("the local state of %s[%d] (offset %d) is outside the log [%d, %d]: "
                         "rebuilt from the changelog", part[0], part[1], found[1], low, high)
        return out

    def _owned_changelogs(self) -> list[tuple[Part, Part]]:
        """(input partition, changelog partition) of every owned state."""
        out = []
        for p in sorted(self.users):
            for state in ("user", "label"):
                if state in self.changelogs:
                    out.append(((self.names["predictions"], p), (self.changelogs[state], p)))
        out += [((self.names["items_repartition"], q), (self.changelogs["item"], q))
                for q in sorted(self.items)]
        return out

    def _mark(self, only: set[Part] | None = None) -> None:
        """Mark owned partitions' local state as current up to their changelog's end."""
        self._last_mark = time.monotonic()
        if self.local is None:
            return
        offsets = {}
        for source, part in self._owned_changelogs():
            if only is None or source in only:
                offsets[part] = self.meta.get_watermark_offsets(TopicPartition(*part),
                                                                timeout=10)[1]
        self.local.mark(offsets, now_ms())

    def _new_user(self, p: int) -> UserPartition:
        s = self.settings
        return UserPartition(p, self.catalog.user, self.label_config, s.allowed_lateness_ms,
                             self.partition_of if self.has_items else None, self.counters,
                             topics=(self.names["clicks"], self.names["predictions"]),
                             check_keys=True)

    def _new_item(self, q: int) -> ItemPartition:
        return ItemPartition(q, self.catalog.item, self.settings.partitions,
                             snapshots=self.label_config is not None, counters=self.counters,
                             topic=self.names["items_repartition"])

    def _reset(self) -> None:
        """After an aborted transaction: every partition from its changelog and offsets."""
        self.aborts += 1
        with self.lock:
            self.users.clear()
            self.items.clear()
        self._to_restore |= self._assigned
        group_tps = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        for tp in self.group.committed(group_tps, timeout=30):
            self.group.seek(TopicPartition(tp.topic, tp.partition,
                                           tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))
        self._follow_add |= {p for t, p in self._assigned if t == self.names["predictions"]}
        self._follow_drop |= set(self._follow_add)
        self._sync_follower()

    # -- one iteration ----------------------------------------------------------------

    def _collect(self) -> _Pending:
        s = self.settings
        wait = s.commit_interval_ms / 1000.0
        msgs = self.group.consume(num_messages=s.batch_max_events, timeout=wait)
        self._sync_follower()
        msgs += self.follower.consume(num_messages=s.batch_max_events, timeout=0)
        if self._to_restore:
            self._restore()
        pending = _Pending()
        kinds = self._topic_kind
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consuming: %s", err)
                continue
            topic, p, offset = str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)
            kind = kinds[topic]
            owned = p in (self.items if kind == "items_repartition" else self.users)
            if not owned:
                continue  # revoked while in flight: its new owner reads it again
            if kind == "items_repartition":
                pending.items[p].append((offset, msg.value()))
            elif kind == "item_snapshots":
                pending.snapshots[p].append((offset, msg.value()))
            else:
                pending.users[p].append((1 if kind == "predictions" else 0, offset, msg.key(),
                                         msg.value()))
            pending.offsets[(topic, p)] = offset + 1
            pending.count += 1
        return pending

    def _caught_up(self, p: int) -> Callable[[str], bool]:
        def caught_up(source: str) -> bool:
            consumer = self.group if source == "predictions" else self.follower
            tp = TopicPartition(self.names[source], p)
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            (pos,) = consumer.position([tp])
            return high >= 0 and pos.offset >= 0 and pos.offset >= high
        return caught_up

    def _process(self, pending: _Pending, idle: bool, report: bool) -> None:
        started = time.time()
        now_ms = int(started * 1000)
        result = Result()
        with self.lock:
            for p, recs in sorted(pending.users.items()):
                batch = InputBatch(np.array([r[0] for r in recs], dtype=np.int8),
                                   np.array([r[1] for r in recs], dtype=np.int64),
                                   [r[2] for r in recs], [r[3] for r in recs])
                result.extend(self.users[p].process(batch, now_ms))
            for p, recs in sorted(pending.snapshots.items()):
                result.extend(self.users[p].process_snapshots(
                    recs, topic=self.names["item_snapshots"]))
            for q, recs in sorted(pending.items.items()):
                result.extend(self.items[q].process(recs))
            if idle:
                for p, part in sorted(self.users.items()):
                    result.extend(part.advance_idle(now_ms, self.settings.idle_advance_ms,
                                                    self._caught_up(p)))
        if idle:
            self.lag = self._measure_lag()
            if report:
                result.outputs.extend(label_reports(list(self.users.values())))
        processed = time.time()
        if not pending.count and not result.outputs and not result.deltas:
            return
        try:
            self.txn.commit(result.outputs, result.deltas, pending.offsets,
                            self.group.consumer_group_metadata())
        except TransactionAborted:
            self._reset()
            return
        if self.local is not None and result.deltas:
            topics = self.changelogs
            self.local_writes += self.local.apply(
                ((topics[d.state], d.partition), d.key, d.value) for d in result.deltas)
        if pending.count:
            self.batch_sizes.add(pending.count, started, processed, time.time())
        if time.monotonic() - self._last_mark >= self.settings.checkpoint_interval_ms / 1000:
            self._mark()

    def _measure_lag(self) -> dict[tuple[str, int], int] | None:
        """Records left to read per assigned input partition (librdkafka's cached ends)."""
        lag: dict[tuple[str, int], int] = {}
        owned = [(self.group, TopicPartition(t, p)) for t, p in sorted(self._assigned)]
        owned += [(self.follower, tp) for p in sorted(self.users) for tp in self._follower_tps(p)]
        for consumer, tp in owned:
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            (pos,) = consumer.position([tp])
            if high < 0:
                return None  # not fetched yet
            lag[(tp.topic, tp.partition)] = max(0, high - pos.offset) if pos.offset >= 0 else high
        return lag

    def readiness(self) -> tuple[bool, str]:
        """(ready, why): assigned, every partition restored, and the lag known."""
        if self.error is not None:
            return False, f"the engine loop stopped: {self.error!r}"
        if not self.running:
            return False, "starting"
        if not self.joined:
            return False, "waiting for the consumer group to assign partitions"
        if self._to_restore:
            return False, f"restoring {len(self._to_restore)} partitions"
        if self.lag is None:
            return False, "input positions not known yet"
        return True, f"{sum(self.lag.values())} records behind"

    # -- reads for the web server -----------------------------------------------------

    def read(self, entity: str, key: str) -> tuple[int, bytes]:
        """(HTTP status, body) of ``GET /features/{entity}/{key}`` answered here."""
        partition = self.partition_of(key)
        with self.lock:
            owner: UserPartition | ItemPartition | None = (
                self.users.get(partition) if entity == "user" else self.items.get(partition))
            if owner is None:
                return 421, b'{"error":"this worker does not own that key\'s partition"}'
            table = owner.table
            row = table.row_of(key)
            if row is None:
                return 404, f'{{"error":"unknown {entity} id"}}'.encode()
            rows = np.array([row], dtype=np.int64)
            values = table.read(rows)
            (body,) = self._encoders[entity].records([key], table.as_of[rows], values, None,
                                                     partition)
        return 200, body

    def owned(self) -> dict[str, list[int]]:
        """The partitions this worker owns now."""
        with self.lock:
            return {"user": sorted(self.users), "item": sorted(self.items)}


def _tps(tps: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps) or "nothing"

