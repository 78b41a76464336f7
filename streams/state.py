"""Changelog-backed keyed state with explicit partitions.

The agent works in batches (``stream.take_events``), where Faust has no current
event, so ``table[key] = value`` cannot tell which changelog partition to use. A key
always lives in the partition of the input records that carry it (both input topics
are keyed by ``user_id`` and co-partitioned), so the batch passes that partition and
we write the store (:mod:`streams.store`) and the table's changelog for it directly:
one changelog message per key per batch.
"""

from __future__ import annotations

from typing import Any


class KeyedState:
    """Read and write one Faust table's raw values by key, naming the partition on writes."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: str) -> bytes | None:
        """The stored value of ``key`` or None."""
        value: bytes | None = self.table.data.get(key)
        return value

    def put(self, partition: int, key: str, value: bytes) -> None:
        """Store ``value`` and send it to the changelog partition ``partition``."""
        self.table.data.put(partition, key, value)
        self.table.send_changelog(partition, key, value)

    def delete(self, partition: int, key: str) -> None:
        """Remove ``key`` and send a tombstone to its changelog partition."""
        self.table.data.delete(partition, key)
        self.table.send_changelog(partition, key, None, value_serializer="raw")

    def keys_for_partition(self, partition: int) -> list[str]:
        """Every key this worker holds for ``partition``."""
        keys: list[str] = self.table.data.keys_for_partition(partition)
        return keys
