"""Where the worker reads each input partition next, and how far behind it is.

librdkafka's ``position()`` is the offset after the last record the application
consumed, so a partition assigned at its end (everything committed, nothing new
since: a quiet input after a restart, a rebalance or an aborted batch) reports
``OFFSET_INVALID`` until a record arrives there (measured here). Asked "is this input
caught up?", such a partition looked behind forever: the idle advance never moved
the watermark and the last labels never became final. The worker records the
offsets it starts reading from (its committed offsets: ``seek`` also leaves the
position unknown) and uses them until librdkafka knows better. librdkafka's own
position is preferred once known: it is past transaction markers, which the
application never sees (an input written in transactions, e.g. the items
repartition topic, ends in one).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from streams.checkpoints import Part


class Positions:
    """Where reading of each input partition started, for when librdkafka does not know."""

    def __init__(self) -> None:
        self._next: dict[Part, int] = {}

    def start(self, tps: Iterable[TopicPartition]) -> None:
        """Reading starts at these offsets (a negative one: from the log's start)."""
        for tp in tps:
            if tp.offset >= 0:
                self._next[(tp.topic, tp.partition)] = tp.offset
            else:
                self._next.pop((tp.topic, tp.partition), None)

    def drop(self, parts: Iterable[Part]) -> None:
        """These partitions are no longer read here."""
        for part in parts:
            self._next.pop(part, None)

    def clear(self) -> None:
        """Nothing is read here any more (a replaced consumer)."""
        self._next.clear()

    def behind(self, consumer: Any, tp: TopicPartition) -> int | None:
        """Records of ``tp`` not read yet (librdkafka's cached end); None: not known."""
        try:
            low, high = (int(x) for x in consumer.get_watermark_offsets(tp, cached=True))
            (pos,) = consumer.position([tp])
            known = int(pos.offset) if pos.offset >= 0 else self._next.get((tp.topic,
                                                                            tp.partition))
        except KafkaException:
            return None  # not known now (e.g. a partition just moved)
        if high < 0:
            return None  # not fetched yet
        if known is None:  # nothing read yet, from the log's start
            return max(0, high - max(low, 0))
        return max(0, high - known)

    def lag(self, owned: Sequence[tuple[Any, TopicPartition]]) -> dict[Part, int] | None:
        """Records not read yet per (consumer, partition); None if any is not known."""
        lag: dict[Part, int] = {}
        for consumer, tp in owned:
            behind = self.behind(consumer, tp)
            if behind is None:
                return None  # a partition just moved, or its end is not fetched yet
            lag[(tp.topic, tp.partition)] = behind
        return lag


def past_markers(offsets: dict[Part, int], group: Any, group_topic: str,
                 follower: Any) -> None:
    """Raise the offsets to commit to librdkafka's positions where those are past a
    transaction marker after the last record (Kafka Streams commits positions too): a
    restart there then starts at the partition's end, not one marker before it.

    ``group`` reads ``group_topic``; ``follower`` every other topic in ``offsets``.
    """
    for consumer, tps in ((group, [TopicPartition(t, p) for t, p in offsets
                                   if t == group_topic]),
                          (follower, [TopicPartition(t, p) for t, p in offsets
                                      if t != group_topic])):
        if not tps:
            continue
        try:
            positions = consumer.position(tps)
        except KafkaException:
            continue  # the record offsets are right too, only a marker short
        for tp in positions:
            key = (tp.topic, tp.partition)
            if tp.offset > offsets[key]:
                offsets[key] = int(tp.offset)
