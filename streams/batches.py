"""What one loop of the worker takes in and how the loops went (sizes and timings)."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Container, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from confluent_kafka import KafkaError

from engine import Result
from streams.transactions import TransactionAborted, Transactions

log = logging.getLogger(__name__)


def partitioner(partitions: int) -> Callable[[str], int]:
    """The Java client's default partition of a string key (murmur2, as Kafka Streams).

    >>> partitioner(4)("user-1") in range(4)
    True
    """

    def partition_of(key: str) -> int:
        return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions

    return partition_of


@dataclass(slots=True)
class Pending:
    """Records of one loop, by partition, and the input offsets they take the worker to."""

    users: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    snapshots: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    items: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    #: keys of the snapshot and item records (only dead letters use them)
    snapshot_keys: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    item_keys: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    count: int = 0

    def take(self, msgs: list[Any], kinds: Mapping[str, str], users: Container[int],
             items: Container[int]) -> None:
        """Sort consumed messages by kind and partition (``kinds``: topic -> kind).

        Only partitions owned here (``users``, ``items``) are taken: a record of one
        revoked while it was in flight is read again by its new owner. Errors are
        logged (end-of-partition events are not errors) and skipped.
        """
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consuming: %s", err)
                continue
            topic, p, offset = str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)
            kind = kinds[topic]
            if p not in (items if kind == "items_repartition" else users):
                continue
            if kind == "items_repartition":
                self.items[p].append((offset, msg.value()))
                self.item_keys[p].append(msg.key())
            elif kind == "item_snapshots":
                self.snapshots[p].append((offset, msg.value()))
                self.snapshot_keys[p].append(msg.key())
            else:
                self.users[p].append((1 if kind == "predictions" else 0, offset, msg.key(),
                                      msg.value()))
            self.offsets[(topic, p)] = offset + 1
            self.count += 1


@dataclass(slots=True)
class Batch:
    """A processed loop waiting for (or in) its transaction."""

    result: Result
    offsets: dict[tuple[str, int], int]
    group_metadata: Any
    count: int
    started: float
    processed: float


class Pipelined:
    """At most one batch's transaction, committing in a thread of its own while the next
    batch is processed (a daemon thread: one stuck in librdkafka, see
    :meth:`Transactions.replace_stuck`, must not keep the process alive)."""

    def __init__(self, txn: Transactions) -> None:
        self.txn = txn
        self._inflight: tuple[Future[Committed], Batch] | None = None

    @property
    def busy(self) -> bool:
        """A transaction is in flight."""
        return self._inflight is not None

    def submit(self, batch: Batch) -> None:
        """Begin committing ``batch`` (after :meth:`settle`: one in flight at a time)."""
        future: Future[Committed] = Future()
        submitted = time.time()

        def run() -> None:
            try:
                self.txn.commit(batch.result.outputs, batch.result.deltas, batch.offsets,
                                batch.group_metadata)
                future.set_result(Committed(submitted, time.time(), self.txn.last_phases_ms))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, name="freshet-commit", daemon=True).start()
        self._inflight = (future, batch)

    def settle(self) -> tuple[Batch, Committed] | None:
        """Wait for the transaction in flight: (its batch, when it was submitted and
        committed), or None with none in flight; :class:`TransactionAborted` if it was
        aborted or got stuck."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return None
        future, batch = inflight
        try:
            return batch, future.result(timeout=self.txn.stuck_s)
        except FutureTimeout:
            self.txn.replace_stuck()
            raise TransactionAborted("stuck") from None


@dataclass(frozen=True, slots=True)
class Committed:
    """When a batch's transaction was submitted and committed (wall-clock s), and its
    phases in ms (:attr:`Transactions.last_phases_ms`)."""

    submitted: float
    committed: float
    phases_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(slots=True)
class BatchSizes:
    """Events per processed batch (how the worker sized them: backlog vs caught up), the
    time a batch spent being processed and committed, and when input first came.

    A batch's commit time (processed -> committed) is split into its wait for the
    transaction before it (``queue``) and its own transaction's phases: ``produce``
    (begin and every record handed to librdkafka), ``offsets`` (the input offsets
    added), ``end`` (the commit: the last records delivered, then the coordinator).

    >>> b = BatchSizes()
    >>> b.add(10, 0.0, 0.5, Committed(0.52, 0.6, (30.0, 20.0, 30.0)))
    >>> d = b.as_dict()
    >>> d["max"], round(d["commit_ms_p50"]), round(d["queue_ms_p50"]), d["end_ms_p50"]
    (10, 100, 20, 30.0)
    """

    batches: int = 0
    events: int = 0
    smallest: int | None = None
    largest: int = 0
    last: int = 0
    #: wall-clock seconds when the first batch with input began, and the last one ended
    first_started: float | None = None
    last_ended: float | None = None
    #: recent (process, commit, queue, produce, offsets, end) durations in ms
    recent: list[tuple[float, ...]] = field(default_factory=list)

    def add(self, n: int, started: float, processed: float, done: Committed) -> None:
        """Count a batch of ``n`` input records (wall-clock seconds of its steps)."""
        self.batches += 1
        self.events += n
        self.last = n
        self.largest = max(self.largest, n)
        self.smallest = n if self.smallest is None else min(self.smallest, n)
        if self.first_started is None:
            self.first_started = started
        self.last_ended = done.committed
        self.recent.append(((processed - started) * 1000, (done.committed - processed) * 1000,
                            (done.submitted - processed) * 1000, *done.phases_ms))
        if len(self.recent) > 1000:
            del self.recent[:500]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        mean = self.events / self.batches if self.batches else None
        out: dict[str, Any] = {"batches": self.batches, "min": self.smallest,
                               "max": self.largest, "mean": mean, "last": self.last,
                               "first_started": self.first_started,
                               "last_ended": self.last_ended}
        for i, name in enumerate(_DURATIONS):
            values = sorted(r[i] for r in self.recent)
            for q in (50, 99):
                out[f"{name}_ms_p{q}"] = (values[int(q / 100 * (len(values) - 1))]
                                          if values else None)
        return out


#: the durations :class:`BatchSizes` keeps per batch, in the order of ``recent``
_DURATIONS = ("process", "commit", "queue", "produce", "offsets", "end")
