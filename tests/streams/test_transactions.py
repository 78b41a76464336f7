"""Transactions on a real broker: a fatal producer error replaces the producer, a fence stops.

The fault is injected by wrapping the real producer (librdkafka's fatal
``INVALID_TXN_STATE`` after a broker outage cannot be produced on demand); the
recovery is the broker's: the new producer's ``init_transactions`` must abort what
the failed one left open, so a ``read_committed`` reader never sees that batch while
a ``read_uncommitted`` one does (the records were on the broker).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, ClassVar

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from engine.records import Delta, Out
from streams import transactions
from streams.transactions import ProducerFenced, TransactionAborted, Transactions

pytestmark = pytest.mark.integration


class Wrapped:
    """A real producer that a fault-injecting subclass wraps; each subclass lists the
    ones made (``first``: this is the first one, the one that fails)."""

    made: ClassVar[list[Any]]

    def __init__(self, config: dict[str, Any]) -> None:
        self.real = Producer(config)
        self.first = not type(self).made
        type(self).made.append(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class FailsOnCommit(Wrapped):
    """A real producer whose ``commit_transaction`` fails fatally ``fails`` times in all."""

    made: ClassVar[list[FailsOnCommit]] = []
    fails: ClassVar[int] = 1

    def commit_transaction(self, *args: Any) -> None:
        if FailsOnCommit.fails > 0:
            FailsOnCommit.fails -= 1
            self.real.flush(30)  # the batch is on the broker, in the open transaction
            raise KafkaException(KafkaError(KafkaError.INVALID_TXN_STATE, "injected",
                                            fatal=True))
        self.real.commit_transaction(*args)


def _topics(bootstrap: str, prefix: str) -> dict[str, str]:
    names = {"out": f"{prefix}out", "input": f"{prefix}input"}
    cl = {"user": f"{prefix}user-changelog"}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, 1, 1) for t in [*names.values(), *cl.values()]])
    for f in futures.values():
        f.result(30)
    return {**names, **{f"changelog:{k}": v for k, v in cl.items()}}


def _config(bootstrap: str, txn_id: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "transactional.id": txn_id,
            "transaction.timeout.ms": 10_000, "enable.idempotence": True}


def _read(bootstrap: str, topic: str, isolation: str) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4()}",
                         "isolation.level": isolation, "enable.partition.eof": True,
                         "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[bytes] = []
    try:
        while True:
            msgs = consumer.consume(100, timeout=5.0)
            assert msgs, f"no end of {topic} within 5 s"
            for msg in msgs:
                if msg.error() is None:
                    out.append(msg.value())
                elif msg.error().code() == KafkaError._PARTITION_EOF:
                    return out
    finally:
        consumer.close()


def _group(bootstrap: str, group: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "enable.auto.commit": False})


def _batch(tag: str, n: int = 3) -> tuple[list[Out], list[Delta]]:
    outs = [Out("out", f"k{i}".encode(), f"{tag}-{i}".encode(), 0) for i in range(n)]
    return outs, [Delta("user", 0, b"k", tag.encode())]


def _aborted_then_committed(kafka_bootstrap: str, prefix: str, names: dict[str, str],
                            factory: type[Wrapped], match: str) -> Consumer:
    """Batch "first" is aborted (``match``) and the producer replaced once; batch
    "second" then commits (input offset 20). The group consumer used, still open."""
    txn = Transactions(_config(kafka_bootstrap, f"{prefix}txn"),
                       {"out": names["out"]}, {"user": names["changelog:user"]},
                       factory=factory)
    group = _group(kafka_bootstrap, f"{prefix}group")
    meta = group.consumer_group_metadata()
    outs, deltas = _batch("first")
    with pytest.raises(TransactionAborted, match=match):
        txn.commit(outs, deltas, {(names["input"], 0): 10}, meta)
    assert len(factory.made) == 2 and len(txn.replaced) == 1
    outs, deltas = _batch("second")
    assert txn.commit(outs, deltas, {(names["input"], 0): 20}, meta) == 4
    txn.close()
    return group


def test_fatal_error_replaces_the_producer_and_aborts_the_batch(
        kafka_bootstrap: str, unique_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    names = _topics(kafka_bootstrap, unique_prefix)
    monkeypatch.setattr(FailsOnCommit, "made", [])
    monkeypatch.setattr(FailsOnCommit, "fails", 1)
    group = _aborted_then_committed(kafka_bootstrap, unique_prefix, names, FailsOnCommit,
                                    "injected")

    committed = _read(kafka_bootstrap, names["out"], "read_committed")
    assert committed == [b"second-0", b"second-1", b"second-2"]
    uncommitted = _read(kafka_bootstrap, names["out"], "read_uncommitted")
    assert uncommitted == [b"first-0", b"first-1", b"first-2", *committed]
    assert _read(kafka_bootstrap, names["changelog:user"], "read_committed") == [b"second"]
    (tp,) = group.committed([TopicPartition(names["input"], 0)], timeout=30)
    assert tp.offset == 20  # the aborted batch's offsets were not committed
    group.close()


def test_too_many_fatal_errors_stop(kafka_bootstrap: str, unique_prefix: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    names = _topics(kafka_bootstrap, unique_prefix)
    monkeypatch.setattr(FailsOnCommit, "made", [])
    monkeypatch.setattr(FailsOnCommit, "fails", 10**6)
    monkeypatch.setattr(transactions, "MAX_REPLACEMENTS", 2)
    txn = Transactions(_config(kafka_bootstrap, f"{unique_prefix}txn"),
                       {"out": names["out"]}, {"user": names["changelog:user"]},
                       factory=FailsOnCommit)
    meta = _group(kafka_bootstrap, f"{unique_prefix}group").consumer_group_metadata()
    for _ in range(2):
        with pytest.raises(TransactionAborted):
            txn.commit(*_batch("x"), {}, meta)
    with pytest.raises(RuntimeError, match="3 fatal producer errors"):
        txn.commit(*_batch("x"), {}, meta)
    assert _read(kafka_bootstrap, names["out"], "read_committed") == []


def test_a_fenced_producer_stops_with_a_clear_error(kafka_bootstrap: str,
                                                    unique_prefix: str) -> None:
    names = _topics(kafka_bootstrap, unique_prefix)
    config = _config(kafka_bootstrap, f"{unique_prefix}txn")
    old = Transactions(config, {"out": names["out"]}, {"user": names["changelog:user"]})
    meta = _group(kafka_bootstrap, f"{unique_prefix}group").consumer_group_metadata()
    new = Transactions(config, {"out": names["out"]}, {"user": names["changelog:user"]})
    with pytest.raises(ProducerFenced, match=f"{unique_prefix}txn was taken over"):
        old.commit(*_batch("old"), {}, meta)
    assert new.commit(*_batch("new"), {}, meta) == 4
    new.close()
    old.close()  # a failed producer closes without raising
    assert _read(kafka_bootstrap, names["out"], "read_committed") == [
        b"new-0", b"new-1", b"new-2"]


class BlocksInSendOffsets(Wrapped):
    """A real producer whose first ``send_offsets_to_transaction`` waits for ``release``
    (as librdkafka's can, past its timeout, after a coordinator loss)."""

    release: ClassVar[threading.Event] = threading.Event()
    made: ClassVar[list[BlocksInSendOffsets]] = []

    def send_offsets_to_transaction(self, *args: Any) -> None:
        if self.first:
            self.real.flush(30)  # the batch is on the broker, in the open transaction
            assert BlocksInSendOffsets.release.wait(60)
        self.real.send_offsets_to_transaction(*args)


def test_a_stuck_transaction_is_left_behind_and_commits_nothing(
        kafka_bootstrap: str, unique_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    names = _topics(kafka_bootstrap, unique_prefix)
    monkeypatch.setattr(BlocksInSendOffsets, "made", [])
    monkeypatch.setattr(BlocksInSendOffsets, "release", threading.Event())
    txn = Transactions(_config(kafka_bootstrap, f"{unique_prefix}txn"),
                       {"out": names["out"]}, {"user": names["changelog:user"]},
                       factory=BlocksInSendOffsets)
    group = _group(kafka_bootstrap, f"{unique_prefix}group")
    meta = group.consumer_group_metadata()
    outcome: list[BaseException | int] = []

    def stuck() -> None:
        try:
            outcome.append(txn.commit(*_batch("stuck"), {(names["input"], 0): 10}, meta))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=stuck, daemon=True)
    thread.start()
    time.sleep(2.0)
    assert not outcome, "the first commit should be blocked"
    txn.replace_stuck()  # what the worker does once stuck_s has passed
    assert txn.commit(*_batch("after"), {(names["input"], 0): 20}, meta) == 4
    BlocksInSendOffsets.release.set()  # the old call returns: its producer is fenced
    thread.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], TransactionAborted), outcome
    assert txn.producer is BlocksInSendOffsets.made[1].real or \
        txn.producer is BlocksInSendOffsets.made[1], "the stale call replaced nothing"
    txn.close()
    assert _read(kafka_bootstrap, names["out"], "read_committed") == [
        b"after-0", b"after-1", b"after-2"]
    (tp,) = group.committed([TopicPartition(names["input"], 0)], timeout=30)
    assert tp.offset == 20
    group.close()


class AbortTimesOut(Wrapped):
    """A real producer whose first offsets call and the abort after it time out (as
    after a broker restart, when the transaction coordinator does not answer)."""

    made: ClassVar[list[AbortTimesOut]] = []

    def send_offsets_to_transaction(self, *args: Any) -> None:
        if self.first:
            self.real.flush(30)
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "injected: offsets",
                                            retriable=True))
        self.real.send_offsets_to_transaction(*args)

    def abort_transaction(self, *args: Any) -> None:
        if self.first:
            self.first = False
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "injected: abort",
                                            retriable=True))
        self.real.abort_transaction(*args)


def test_an_abort_that_does_not_finish_replaces_the_producer(
        kafka_bootstrap: str, unique_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # before, the producer stayed mid-abort: each next batch failed with _CONFLICT and
    # waited 30 s for another abort that never finished (a broker-restart CI run)
    names = _topics(kafka_bootstrap, unique_prefix)
    monkeypatch.setattr(AbortTimesOut, "made", [])
    group = _aborted_then_committed(kafka_bootstrap, unique_prefix, names, AbortTimesOut,
                                    "injected: offsets")
    assert _read(kafka_bootstrap, names["out"], "read_committed") == [
        b"second-0", b"second-1", b"second-2"]
    committed = group.committed([TopicPartition(names["input"], 0)], timeout=10)
    assert committed[0].offset == 20
    group.close()
