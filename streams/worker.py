"""The stream worker: consumer group, micro-batches through the engine, one transaction each.

Input path (chosen by measurement, see README): confluent-kafka's batch ``consume``.
The worker group (cooperative-sticky) assigns partitions of ``predictions`` only;
partition ``p`` of ``predictions`` is *task* ``p``: its worker also reads partition
``p`` of ``clicks``, of the item snapshots and of the items repartition topic (a
second consumer that never joins the group), so a user's clicks, predictions,
features and pending labels always live together, and the assignor, which balances
partition counts over all subscribed topics, splits user and item work alike (with
both topics subscribed, two workers could get all of one topic each: measured).

Each loop takes what the consumers have (up to ``FRESHET_BATCH_MAX_EVENTS`` each;
when nothing is there and no transaction is in flight, it waits for records up to
``FRESHET_COMMIT_INTERVAL_MS``), runs it through the engine's partitions, and
commits outputs, changelog deltas and input offsets in one transaction
(:mod:`streams.transactions`). Commits are pipelined: a batch's transaction
commits in a second thread while the next batch is processed, and the next
transaction begins only when it has committed. A newly assigned partition is
restored first (:mod:`streams.state`); a revoked one is dropped once the
transaction in flight has committed. If a transaction is aborted, every partition
is restored again and its inputs re-read from the committed offsets (the batch
processed meanwhile is dropped with it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from engine import InputBatch, ItemPartition, Result, UserPartition, label_reports
from engine.users import Counters
from features.catalog import Catalog
from freshet.settings import Settings
from streams import kafka
from streams.batches import Batch, BatchSizes, Pending, Pipelined, partitioner
from streams.checkpoints import Part
from streams.follower import Follower
from streams.loops import Loop
from streams.positions import Positions, past_markers
from streams.reads import FeatureReads
from streams.state import PartitionStates, readable
from streams.transactions import TransactionAborted, Transactions

log = logging.getLogger(__name__)

#: How often label watermarks and delay statistics are published.
REPORT_EVERY_S = 5.0
#: How long one wait for input lasts while a caught-up worker waits for records.
POLL_S = 0.005


class Worker(Loop):
    """One worker process's engine loop (runs in its own thread; see the module doc)."""

    name = "freshet-worker"

    def __init__(self, settings: Settings, catalog: Catalog | None = None,
                 group_factory: Callable[[dict[str, Any]], Any] = Consumer) -> None:
        super().__init__()
        self.settings = settings
        self._group_factory = group_factory  # a testing aid: wraps the group consumer
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
        self.states: PartitionStates | None = None  # opened by run()
        self._last_mark = time.monotonic()
        self._batch_began = 0.0  # monotonic s when the last batch began collecting

        self._assigned: set[Part] = set()
        self._to_restore: set[Part] = set()
        self._positions = Positions()
        self._needs_reset = False
        self.running = False
        #: the group has assigned this worker its partitions at least once
        self.joined = False
        #: records not yet read per assigned input partition (None until known)
        self.lag: dict[Part, int] | None = None
        self.reads = FeatureReads(self.catalog, settings.partitions, self.partition_of,
                                  self.lock, self.users, self.items)
        self._topic_kind = {self.names["predictions"]: "predictions",
                            self.names["clicks"]: "clicks",
                            self.names["item_snapshots"]: "item_snapshots",
                            self.names["items_repartition"]: "items_repartition"}

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        """The loop (see the module doc); returns when :meth:`stop` is called (it finishes
        the current batch and leaves the group)."""
        s = self.settings
        started = time.monotonic()
        self.states = PartitionStates(s, self.changelogs)
        self.txn = Transactions(kafka.transactional_producer(s), self.names, self.changelogs,
                                commit_delay_s=s.debug_commit_delay_ms / 1000.0,
                                wait_s=s.broker_wait_ms / 1000.0)
        self.commits = Pipelined(self.txn)
        log.info("transactional producer %s ready in %.2f s", s.transactional_id(),
                 time.monotonic() - started)
        self.group = self._group_factory(kafka.group_consumer(s))
        self.follow = Follower(Consumer(kafka.follower_consumer(s)), self.names,
                               self.has_items, self.label_config is not None,
                               self._positions, s.broker_wait_ms / 1000)
        self._subscribe()
        self.running = True
        last_idle = last_report = time.monotonic()
        idle_every = min(1.0, max(0.05, s.idle_advance_ms / 4000))
        mark_every = s.checkpoint_interval_ms / 1000
        clean = False
        try:
            while not self._stop.is_set():
                try:
                    pending = self._collect()
                    now = time.monotonic()
                    idle = now - last_idle >= idle_every
                    report = now - last_report >= REPORT_EVERY_S
                    batch = self._process(pending, idle, report) if pending is not None else None
                    last_idle = now if idle else last_idle
                    last_report = now if report else last_report
                    if not self._settle():
                        continue  # aborted: every partition was reset, this batch is void
                except KafkaException as exc:
                    # the group consumer failed for good inside a call (e.g. its committed
                    # offsets, asked after an abort caused by its own fencing)
                    if not _fatal(exc.args[0]):
                        raise
                    self._replace_group(exc.args[0])
                    continue
                if now - self._last_mark >= mark_every:
                    self._mark()
                if batch is not None:
                    self.commits.submit(batch)
            clean = self._settle()
        finally:
            self.running = False
            if clean:
                self._mark()  # a clean stop: the next start reads no changelog
            self.group.close()
            self.follow.consumer.close()
            self.txn.close()
            self.states.close()

    # -- transactions -----------------------------------------------------------------

    def _settle(self, defer_reset: bool = False) -> bool:
        """Wait for the transaction in flight; False if it was aborted (state reset)."""
        try:
            done = self.commits.settle()
        except TransactionAborted:
            if defer_reset:  # inside a rebalance callback: reset when it has returned
                self._needs_reset = True
            else:
                self._reset()
            return False
        if done is not None:
            batch, committed = done
            if self.states is not None:
                self.states.committed(batch.result.deltas)
            if batch.count:
                self.batch_sizes.add(batch.count, batch.started, batch.processed, committed)
        return True

    def _mark(self, only: set[Part] | None = None) -> None:
        """Mark owned partitions' local state as current (no transaction in flight)."""
        self._last_mark = time.monotonic()
        if self.states is None:
            return
        parts = []
        for p in sorted(self.users):
            if only is None or (self.names["predictions"], p) in only:
                parts += [(self.changelogs[state], p) for state in ("user", "label")
                          if state in self.changelogs]
        for q in sorted(self.items):
            if only is None or (self.names["predictions"], q) in only:
                parts.append((self.changelogs["item"], q))
        self.states.mark(parts)

    def _reset(self) -> None:
        """After an aborted transaction: every partition from its changelog and offsets."""
        self.aborts += 1
        self._needs_reset = False
        with self.lock:
            self.users.clear()
            self.items.clear()
        self._to_restore |= self._assigned
        group_tps = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        committed = kafka.committed_offsets(self.group, group_tps,
                                            self.settings.broker_wait_ms / 1000)
        self._positions.start(committed)
        for tp in committed:
            self.group.seek(TopicPartition(tp.topic, tp.partition,
                                           tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))
        self.follow.refollow(p for _, p in self._assigned)
        self.follow.sync(self.group)

    # -- assignment -------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.joined = True
        self.lag = None
        for tp in partitions:
            self._assigned.add((tp.topic, tp.partition))
            self._to_restore.add((tp.topic, tp.partition))
        self.follow.follow(tp.partition for tp in partitions)
        log.info("assigned %s", _tps(partitions))

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.lag = None
        # the transaction in flight holds these partitions' offsets: let it commit first
        if self._settle(defer_reset=True):
            self._mark({(tp.topic, tp.partition) for tp in partitions})
        with self.lock:
            for tp in partitions:
                self._assigned.discard((tp.topic, tp.partition))
                self._to_restore.discard((tp.topic, tp.partition))
                self.users.pop(tp.partition, None)
                self.items.pop(tp.partition, None)
        self.follow.unfollow(tp.partition for tp in partitions)
        self._positions.drop((tp.topic, tp.partition) for tp in partitions)
        log.info("revoked %s", _tps(partitions))

    def _subscribe(self) -> None:
        self.group.subscribe([self.names["predictions"]], on_assign=self._on_assign,
                             on_revoke=self._on_revoke, on_lost=self._on_revoke)

    def _replace_group(self, err: Any) -> None:
        """Replace a group consumer that failed for good (seen after a broker restart:
        librdkafka's fatal "static consumer fenced by other consumer with same
        group.instance.id", the other being its own rejoin): drop every partition and
        join again; the new member takes the partitions back from their committed
        offsets and state."""
        log.error("the group consumer failed for good (%s): replacing it; every partition "
                  "is restored and read again", err.str())
        self._settle(defer_reset=True)  # its offsets cannot commit now: it aborts
        self._needs_reset = False  # nothing left to reset: every partition is dropped
        with self.lock:
            self.users.clear()
            self.items.clear()
        self.follow.unfollow(p for _, p in self._assigned)
        self._assigned.clear()
        self._to_restore.clear()
        self._positions.clear()
        self.lag = None
        old, self.group = self.group, self._group_factory(kafka.group_consumer(self.settings))
        try:
            old.close()
        except (KafkaException, RuntimeError) as exc:
            log.info("closing the failed group consumer: %s", exc)
        self._subscribe()
        self.follow.sync(self.group)

    def _restore(self) -> None:
        """Rebuild newly assigned partitions (changelogs, local store) before their input."""
        if self.states is None:
            raise RuntimeError("restore before the worker runs")
        users = sorted(p for t, p in self._to_restore if t == self.names["predictions"])
        # where the group starts these (their committed offsets): see streams.positions
        self._positions.start(kafka.committed_offsets(
            self.group, [TopicPartition(self.names["predictions"], p) for p in users],
            self.settings.broker_wait_ms / 1000))
        items = users if self.has_items else []
        parts = [(self.changelogs["user"], p) for p in users]
        if self.label_config is not None:
            parts += [(self.changelogs["label"], p) for p in users]
        parts += [(self.changelogs["item"], q) for q in items]
        states = self.states.restore(parts).states
        with self.lock:
            for p in users:
                part = self._new_user(p)
                label = states.get((self.changelogs.get("label", ""), p), {})
                with readable(self.changelogs["user"], p):
                    part.restore(list(states[(self.changelogs["user"], p)].items()),
                                 list(label.items()))
                self.users[p] = part
            for q in items:
                item = self._new_item(q)
                with readable(self.changelogs["item"], q):
                    item.restore(list(states[(self.changelogs["item"], q)].items()))
                self.items[q] = item
        self.restores += len(users) + len(items)
        self._to_restore.clear()

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

    # -- one iteration ----------------------------------------------------------------

    def _consume(self, timeout_s: float) -> list[Any]:
        n = self.settings.batch_max_events
        msgs: list[Any] = self.group.consume(num_messages=n, timeout=timeout_s)
        self.follow.sync(self.group)
        msgs += self.follow.consumer.consume(num_messages=n, timeout=0)
        return msgs

    def _collect(self) -> Pending | None:
        """What the consumers have now; None when an abort reset every partition."""
        # with a transaction in flight, take what is there and process it meanwhile;
        # else wait for the first records (up to the commit interval: the idle timers)
        msgs = self._consume(0)
        # caught up (less than a full batch there): gather for the rest of the minimum
        # interval since the last batch began, so a trickle of records makes a few
        # batches (transactions) a second, not one per commit round trip
        wait_s = (self._batch_began + self.settings.batch_min_interval_ms / 1000.0
                  - time.monotonic())
        if wait_s > 0 and len(msgs) < self.settings.batch_max_events:
            self._stop.wait(wait_s)
            msgs += self._consume(0)
        self._batch_began = time.monotonic()
        if not msgs and not self.commits.busy:
            deadline = time.monotonic() + self.settings.commit_interval_ms / 1000.0
            while not msgs and time.monotonic() < deadline and not self._stop.is_set():
                msgs = self._consume(POLL_S)
        fatal = next((m.error() for m in msgs if m.error() is not None and _fatal(m.error())),
                     None)
        if fatal is not None:
            self._replace_group(fatal)
            return None  # every partition is assigned and read again
        if self._needs_reset:
            self._reset()
            return None  # records of before the reset are read again
        if self._to_restore:
            self._restore()
        pending = Pending()
        pending.take(msgs, self._topic_kind, self.users, self.items)
        past_markers(pending.offsets, self.group, self.names["predictions"], self.follow.consumer)
        return pending

    def _caught_up(self, p: int) -> Callable[[str], bool]:
        def caught_up(source: str) -> bool:
            consumer = self.group if source == "predictions" else self.follow.consumer
            # not known (e.g. just reassigned): not caught up
            return self._positions.behind(consumer, TopicPartition(self.names[source], p)) == 0
        return caught_up

    def _process(self, pending: Pending, idle: bool, report: bool) -> Batch | None:
        """Run the records through the engine; the batch to commit (None: nothing to)."""
        if not (pending.count or idle or report):
            return None
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
                    recs, topic=self.names["item_snapshots"], keys=pending.snapshot_keys[p]))
            for q, recs in sorted(pending.items.items()):
                result.extend(self.items[q].process(recs, pending.item_keys[q]))
            if idle:
                for p, part in sorted(self.users.items()):
                    result.extend(part.advance_idle(now_ms, self.settings.idle_advance_ms,
                                                    self._caught_up(p)))
            if report:
                result.outputs.extend(label_reports(list(self.users.values())))
        if idle:
            self.lag = self._measure_lag()
        if not pending.count and not result.outputs and not result.deltas:
            return None
        return Batch(result, pending.offsets, self.group.consumer_group_metadata(),
                     pending.count, started, time.time())

    # -- what the web server asks -----------------------------------------------------

    def _measure_lag(self) -> dict[Part, int] | None:
        """Records left to read per assigned input partition (librdkafka's cached ends)."""
        owned = [(self.group, TopicPartition(t, p)) for t, p in sorted(self._assigned)]
        owned += [(self.follow.consumer, tp)
                  for p in sorted(self.users) for tp in self.follow.tps(p)]
        return self._positions.lag(owned)

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

    def read(self, entity: str, key: str) -> tuple[int, bytes]:
        """(HTTP status, body) of ``GET /features/{entity}/{key}`` answered here."""
        return self.reads.read(entity, key)

    def owned(self) -> dict[str, list[int]]:
        """The partitions this worker owns now."""
        with self.lock:
            return {"user": sorted(self.users), "item": sorted(self.items)}


def _fatal(err: Any) -> bool:
    return bool(err.fatal() or err.code() == KafkaError._FATAL)


def _tps(tps: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps) or "nothing"
