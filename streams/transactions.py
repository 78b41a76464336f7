"""One Kafka transaction per batch: outputs, changelog records and input offsets together.

This is Kafka Streams' exactly-once (v2) scheme: the worker's single transactional
producer writes a batch's outputs and state changes and, with
``send_offsets_to_transaction``, the input offsets the batch consumed, then commits
them at once. A ``read_committed`` consumer sees all of a batch or none of it; a
worker that dies mid-batch leaves an open transaction that its restart (same
``transactional.id``) aborts, and the inputs are read again from the committed
offsets against the committed state. A worker thrown out of its group (a zombie)
cannot commit: the group's generation is part of the offset commit.

A *fatal* producer error (librdkafka's word: this producer instance can do nothing
more; seen here after a broker restart as ``INVALID_TXN_STATE`` once adding offsets
had timed out) does not stop the worker: the producer is replaced by a new one with
the same ``transactional.id``, whose ``init_transactions`` aborts whatever the old
one left open, and the batch counts as aborted (read again). So is a producer whose
abort did not finish (timed out while the coordinator was away: it stays mid-abort
and refuses every next transaction with ``_CONFLICT``). Only a producer *fenced* by a
newer one with its id (another worker with this identity) stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from engine.records import Delta, Out

log = logging.getLogger(__name__)


#: errors that mean a newer producer with this transactional.id exists
_FENCED: Final = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                            KafkaError.INVALID_PRODUCER_EPOCH})
#: at most this many replaced producers in :data:`REPLACE_WINDOW_S` (then stop)
MAX_REPLACEMENTS: Final = 5
REPLACE_WINDOW_S: Final = 600.0


class TransactionAborted(RuntimeError):
    """The batch's transaction was aborted: its state changes must be dropped."""


class ProducerFenced(RuntimeError):
    """A newer producer with this worker's transactional.id exists: this worker stops."""


class Transactions:
    """A transactional producer that commits one batch at a time."""

    def __init__(self, config: dict[str, Any], topics: Mapping[str, str],
                 changelogs: Mapping[str, str], timeout_s: float = 30.0,
                 commit_delay_s: float = 0.0, wait_s: float = 60.0,
                 factory: Callable[[dict[str, Any]], Any] = Producer) -> None:
        self._config = config
        self._factory = factory  # a testing aid: wraps the real producer to inject faults
        #: how long a new producer may wait for the broker (FRESHET_BROKER_WAIT_MS)
        self.wait_s = wait_s
        #: when producers were replaced after a fatal error (monotonic seconds)
        self.replaced: list[float] = []
        self.commit_delay_s = commit_delay_s  # a testing aid (FRESHET_DEBUG_COMMIT_DELAY_MS)
        #: the current transaction's records are on the broker, not committed yet
        self.awaiting_commit = False
        self.topics = topics
        self.changelogs = changelogs
        self.timeout_s = timeout_s
        self.commits = 0
        self.records = 0
        #: the last committed transaction's phases in ms: producing its records (with
        #: begin), adding the input offsets, committing (where a commit's time goes)
        self.last_phases_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.producer: Any = self._new_producer()

    def _new_producer(self) -> Any:
        """A producer with transactions initialised (waits out a recovering broker)."""
        producer = self._factory(self._config)
        deadline = time.monotonic() + self.wait_s
        pause = 0.2
        while True:
            try:
                producer.init_transactions(self.timeout_s)
                return producer
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable() or time.monotonic() + pause > deadline:
                    raise
                log.warning("initialising transactions: %s; retrying in %.1f s", err.str(),
                            pause)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _replace(self, err: Any) -> None:
        """Replace a producer that failed for good or is stuck mid-abort (module doc)."""
        if err.code() in _FENCED:
            raise ProducerFenced(
                f"transactional.id {self._config.get('transactional.id')} was taken over by a "
                f"newer producer ({err.str()}): another worker runs with this identity "
                "(FRESHET_WORKER_ID, or the same host and FRESHET_DATA_DIR); this one stops")
        now = time.monotonic()
        self.replaced = [t for t in self.replaced if now - t < REPLACE_WINDOW_S] + [now]
        if len(self.replaced) > MAX_REPLACEMENTS:
            raise RuntimeError(f"{len(self.replaced)} fatal producer errors in "
                               f"{REPLACE_WINDOW_S:.0f} s, the last: {err.str()}")
        log.error("the transactional producer is unusable (%s): replacing it; this "
                  "batch is aborted and read again", err.str())
        try:
            self.producer.purge()  # drop what it still queues; its transaction is aborted
        except (KafkaException, RuntimeError) as exc:  # by the new one's init_transactions
            log.info("purging the old producer: %s", exc)
        self.producer = self._new_producer()

    @staticmethod
    def _produce(producer: Any, topic: str, key: bytes | None, value: bytes | None,
                 partition: int | None) -> None:
        produce = producer.produce
        while True:
            try:
                if partition is None:
                    produce(topic, value, key)
                else:
                    produce(topic, value, key, partition)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.005)

    def commit(self, outputs: Iterable[Out], deltas: Iterable[Delta],
               offsets: Mapping[tuple[str, int], int], group_metadata: Any) -> int:
        """Produce everything and the offsets in one transaction; the records sent.

        Raises :class:`TransactionAborted` when the transaction had to be aborted (the
        caller drops its state and reads again from the committed offsets), and
        ``KafkaException`` for fatal errors (this producer was fenced: stop).
        """
        producer = self.producer
        topics, changelogs = self.topics, self.changelogs
        sent = 0
        started = time.monotonic()
        try:
            producer.begin_transaction()
            produce, slow = producer.produce, self._produce
            # the hot loop of the commit thread: one librdkafka call per record, the
            # retry on a full local queue only when it happens
            for out in outputs:
                topic = topics[out.topic]
                try:
                    if out.partition is None:
                        produce(topic, out.value, out.key)
                    else:
                        produce(topic, out.value, out.key, out.partition)
                except BufferError:
                    slow(producer, topic, out.key, out.value, out.partition)
                sent += 1
            for delta in deltas:
                topic = changelogs[delta.state]
                try:
                    produce(topic, delta.value, delta.key, delta.partition)
                except BufferError:
                    slow(producer, topic, delta.key, delta.value, delta.partition)
                sent += 1
            produced = time.monotonic()
            if offsets:
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    group_metadata, self.timeout_s)
            offsets_added = time.monotonic()
            if self.commit_delay_s:
                producer.flush(self.timeout_s)  # the records are on the broker, uncommitted
                self.awaiting_commit = True
                time.sleep(self.commit_delay_s)
            self._commit(producer)
            self.awaiting_commit = False
        except KafkaException as exc:
            self.awaiting_commit = False
            err = exc.args[0]
            if producer is not self.producer:  # replaced while this call was stuck
                raise TransactionAborted(f"a replaced producer's transaction: {err}") from exc
            if err.fatal() or err.code() == KafkaError._CONFLICT:
                # _CONFLICT: an earlier abort is still in progress in this producer
                self._replace(err)
                raise TransactionAborted(str(err)) from exc
            log.warning("transaction failed (%s); aborting it", err)
            try:
                producer.abort_transaction(self.timeout_s)
            except KafkaException as abort_exc:
                # an abort that did not finish leaves the producer mid-abort, and each
                # later begin_transaction answers _CONFLICT (seen after a broker restart:
                # an endless loop of 30 s aborts); a new producer with this id fences it
                # and aborts its transaction
                log.warning("abort failed too: %s", abort_exc.args[0])
                self._replace(abort_exc.args[0])
            raise TransactionAborted(str(err)) from exc
        self.commits += 1
        self.records += sent
        ended = time.monotonic()
        self.last_phases_ms = ((produced - started) * 1000, (offsets_added - produced) * 1000,
                               (ended - offsets_added - self.commit_delay_s) * 1000)
        took = ended - started - self.commit_delay_s
        if took > 5.0:
            log.warning("a transaction of %d records took %.1f s to commit", sent, took)
        return sent

    def _commit(self, producer: Any) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                producer.commit_transaction(self.timeout_s)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.retriable() and time.monotonic() < deadline:
                    log.info("retrying the commit: %s", err)
                    continue
                raise

    def replace_stuck(self) -> None:
        """Replace a producer whose call never returned (its thread is left behind).

        librdkafka's ``send_offsets_to_transaction`` can block past its timeout when
        the group coordinator went away (seen here after a broker restart; librdkafka
        issues #5456, #5511). The new producer's ``init_transactions`` fences the old
        one and aborts its transaction, so a call of the old one that returns later
        can commit nothing.
        """
        log.error("a transaction has not finished in %.0f s (librdkafka blocks past its "
                  "timeout after a coordinator loss): replacing the producer; the batch "
                  "is aborted and read again", self.stuck_s)
        self.producer = self._new_producer()

    @property
    def stuck_s(self) -> float:
        """How long a transaction may take before it counts as stuck."""
        return self.timeout_s * 2 + 5.0

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver anything queued (nothing is, between transactions)."""
        try:
            self.producer.flush(timeout_s)
        except KafkaException as exc:  # a failed producer: keep the error that stopped us
            log.warning("closing the transactional producer: %s", exc.args[0])
