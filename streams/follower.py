"""The worker's second consumer: the inputs of its tasks besides ``predictions``.

Task ``p`` (partition ``p`` of ``predictions``, assigned by the group) also reads
partition ``p`` of ``clicks``, of the item snapshots and of the items repartition
topic. This consumer never joins the group: the worker assigns it those partitions
by hand, from the group's committed offsets, as tasks come and go.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams import kafka
from streams.positions import Positions


class Follower:
    """Which task partitions the follower consumer reads, kept in step with the group."""

    def __init__(self, consumer: Any, names: dict[str, str], items: bool, snapshots: bool,
                 positions: Positions, wait_s: float) -> None:
        self.consumer = consumer
        self._topics = [names["clicks"]]
        if items:
            if snapshots:
                self._topics.append(names["item_snapshots"])
            self._topics.append(names["items_repartition"])
        self._positions = positions
        self._wait_s = wait_s
        self._add: set[int] = set()
        self._drop: set[int] = set()
        #: the tasks assigned to the consumer now (only those can be unassigned)
        self._reading: set[int] = set()

    def tps(self, p: int) -> list[TopicPartition]:
        """What task ``p`` reads here: clicks, snapshots, item events."""
        return [TopicPartition(topic, p) for topic in self._topics]

    def follow(self, tasks: Iterable[int]) -> None:
        """Start reading these tasks (at the next :meth:`sync`)."""
        for p in tasks:
            self._add.add(p)
            self._drop.discard(p)

    def unfollow(self, tasks: Iterable[int]) -> None:
        """Stop reading these tasks (at the next :meth:`sync`)."""
        for p in tasks:
            self._drop.add(p)
            self._add.discard(p)

    def refollow(self, tasks: Iterable[int]) -> None:
        """Read these tasks again from their committed offsets (after an abort)."""
        tasks = set(tasks)
        self._drop |= tasks
        self._add |= tasks

    def sync(self, group: Any) -> None:
        """Apply what changed; new tasks start at ``group``'s committed offsets."""
        tasks = sorted(self._drop & self._reading)
        self._drop.clear()
        if tasks:
            drop = [tp for p in tasks for tp in self.tps(p)]
            self.consumer.incremental_unassign(drop)
            self._positions.drop((tp.topic, tp.partition) for tp in drop)
            self._reading.difference_update(tasks)
        tasks = sorted(self._add - self._reading)
        if tasks:
            tps = [tp for p in tasks for tp in self.tps(p)]
            committed = kafka.committed_offsets(group, tps, self._wait_s)
            start = [TopicPartition(tp.topic, tp.partition,
                                    tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                     for tp in committed]
            self._positions.start(committed)
            self.consumer.incremental_assign(start)
            self._reading.update(tasks)
        self._add.clear()
