"""One Kafka transaction per batch: outputs, changelog records and input offsets together.

This is Kafka Streams' exactly-once (v2) scheme: the worker's single transactional
producer writes a batch's outputs and state changes and, with
``send_offsets_to_transaction``, the input offsets the batch consumed, then commits
them at once. A ``read_committed`` consumer sees all of a batch or none of it; a
worker that dies mid-batch leaves an open transaction that its restart (same
``transactional.id``) aborts, and the inputs are read again from the committed
offsets against the committed state. A worker thrown out of its group (a zombie)
cannot commit: the group's generation is part of the offset commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaException, Producer, TopicPartition

from engine.records import Delta, Out

log = logging.getLogger(__name__)


class TransactionAborted(RuntimeError):
    """The batch's transaction was aborted: its state changes must be dropped."""


class Transactions:
    """A transactional producer that commits one batch at a time."""

    def __init__(self, config: dict[str, Any], topics: Mapping[str, str],
                 changelogs: Mapping[str, str], timeout_s: float = 30.0,
                 commit_delay_s: float = 0.0) -> None:
        self.producer = Producer(config)
        self.commit_delay_s = commit_delay_s  # a testing aid (FRESHET_DEBUG_COMMIT_DELAY_MS)
        #: the current transaction's records are on the broker, not committed yet
        self.awaiting_commit = False
        self.topics = topics
        self.changelogs = changelogs
        self.timeout_s = timeout_s
        self.commits = 0
        self.records = 0
        self.producer.init_transactions(timeout_s)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 partition: int | None) -> None:
        produce = self.producer.produce
        while True:
            try:
                if partition is None:
                    produce(topic, value, key)
                else:
                    produce(topic, value, key, partition)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.005)

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
            for out in outputs:
                self._produce(topics[out.topic], out.key, out.value, out.partition)
                sent += 1
            for delta in deltas:
                self._produce(changelogs[delta.state], delta.key, delta.value, delta.partition)
                sent += 1
            if offsets:
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    group_metadata, self.timeout_s)
            if self.commit_delay_s:
                producer.flush(self.timeout_s)  # the records are on the broker, uncommitted
                self.awaiting_commit = True
                time.sleep(self.commit_delay_s)
            self._commit()
            self.awaiting_commit = False
        except KafkaException as exc:
            err = exc.args[0]
            if getattr(err, "fatal", lambda: False)():
                raise
            log.warning("transaction failed (%s); aborting it", err)
            try:
                producer.abort_transaction(self.timeout_s)
            except KafkaException as abort_exc:
                if abort_exc.args[0].fatal():
                    raise
                log.warning("abort failed too: %s", abort_exc.args[0])
            raise TransactionAborted(str(err)) from exc
        self.commits += 1
        self.records += sent
        took = time.monotonic() - started - self.commit_delay_s
        if took > 5.0:
            log.warning("a transaction of %d records took %.1f s to commit", sent, took)
        return sent

    def _commit(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                self.producer.commit_transaction(self.timeout_s)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.retriable() and time.monotonic() < deadline:
                    log.info("retrying the commit: %s", err)
                    continue
                raise

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver anything queued (nothing is, between transactions)."""
        self.producer.flush(timeout_s)
