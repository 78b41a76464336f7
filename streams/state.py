"""Changelog-backed keyed state with explicit partitions.

The agents work in batches (``stream.take_events``), where Faust has no current
event, so ``table[key] = value`` cannot tell which changelog partition to use. A key
always lives in the partition of the input records that carry it (both input topics
are keyed by ``user_id`` and co-partitioned; items by the repartition topic), so a
batch names that partition: the store (:mod:`streams.store`) is written for it, and
the new value goes to that partition of the table's changelog topic through the
producer, one message per key per batch. Faust's own per-write path (its producer
buffer and the "buffer full" back-pressure it puts on the fetcher) is not used.

No changelog offset is persisted in RocksDB, so a restarted worker restores its
tables from the (compacted) changelog from the start. That costs recovery time, but
Faust's resume-from-persisted-offset path can hang recovery ("No event received for
active tp ... since recovery start", faust-streaming issues #74 and #155), which our
SIGKILL restart tests ran into.
"""

from __future__ import annotations

from typing import Any

from aiokafka.partitioner import murmur2


class KeyedState:
    """Read and write one Faust table's raw values by key, naming the partition."""

    def __init__(self, table: Any) -> None:
        self.table = table

    @property
    def changelog_topic(self) -> str:
        """The table's changelog topic name."""
        name: str = self.table.changelog_topic.get_topic_name()
        return name

    def partition_of(self, key: str) -> int:
        """The partition a key lives in (the Java client's default partitioner)."""
        partitions: int = self.table.partitions
        return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions

    def get(self, partition: int, key: str) -> bytes | None:
        """The stored value of ``key`` in ``partition``, or None."""
        value: bytes | None = self.table.data.get_in(partition, key.encode())
        return value

    def put(self, partition: int, key: str, value: bytes | None) -> None:
        """Store ``value`` for ``key`` in ``partition`` (None deletes the key)."""
        if value is None:
            self.table.data.delete(partition, key.encode())
        else:
            self.table.data.put(partition, key.encode(), value)

    def keys_for_partition(self, partition: int) -> list[str]:
        """Every key this worker holds for ``partition``."""
        return [k.decode() for k in self.table.data.keys_for_partition(partition)]
