"""Faust stores that accept writes with an explicit partition.

Faust's RocksDB store picks the partition of a write from the *current event*, which
does not exist while a batch from ``stream.take_events`` is processed. These
subclasses add ``put``/``delete`` that name the partition, and are registered as the
``freshet-rocksdb://`` and ``freshet-memory://`` stores through Faust's
``faust.stores`` entry-point group (see pyproject.toml).
"""

from __future__ import annotations

from faust.stores.memory import Store as MemoryStore
from faust.stores.rocksdb import Store as RocksDBStore


class PartitionedRocksDBStore(RocksDBStore):
    """RocksDB (rocksdict) store, one database per partition, explicit-partition writes."""

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        """Write ``key`` into the database of ``partition``."""
        raw_key = self._encode_key(key)
        self._key_index[raw_key] = partition
        self._db_for_partition(partition).put(raw_key, self._encode_value(value))

    def delete(self, partition: int, key: bytes) -> None:
        """Delete ``key`` from the database of ``partition``."""
        raw_key = self._encode_key(key)
        self._key_index.pop(raw_key, None)
        self._db_for_partition(partition).delete(raw_key)

    def keys_for_partition(self, partition: int) -> list[bytes]:
        """Every key stored for ``partition`` (used to rebuild in-memory indexes)."""
        db = self._db_for_partition(partition)
        return [self._decode_key(k) for k in self._visible_keys(db)]


class PartitionedMemoryStore(MemoryStore):
    """In-memory store with the same explicit-partition API (partition is irrelevant)."""

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        """Write ``key``."""
        self.data[key] = value
        self._key_partition[key] = partition

    def delete(self, partition: int, key: bytes) -> None:
        """Delete ``key``."""
        self.data.pop(key, None)
        self._key_partition.pop(key, None)

    def keys_for_partition(self, partition: int) -> list[bytes]:
        """Every key stored for ``partition`` (used to rebuild in-memory indexes)."""
        return [k for k, p in self._key_partition.items() if p == partition and k in self.data]
