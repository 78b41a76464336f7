"""Faust stores that accept writes with an explicit partition.

Faust's RocksDB store picks the partition of a read or write from the *current
event*, which is not the right one (or none) while a batch from
``stream.take_events`` is processed: a read of a key of partition 3 went to the
database of partition 1, missed, and the key started over from an empty state.
These subclasses add ``get_in``/``put``/``delete`` that name the partition, and are
registered as the ``freshet-rocksdb://`` and ``freshet-memory://`` stores through
Faust's ``faust.stores`` entry-point group (see pyproject.toml).
"""

from __future__ import annotations

from faust.stores.memory import Store as MemoryStore
from faust.stores.rocksdb import Store as RocksDBStore


class PartitionedRocksDBStore(RocksDBStore):
    """RocksDB (rocksdict) store, one database per partition, explicit-partition access."""

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        """The value of ``key`` in the database of ``partition`` (None: absent).

        Faust's own ``get`` picks the database from the *current event*, which a
        batch agent may still hold from another partition: a read then misses.
        """
        raw = self._db_for_partition(partition).get(self._encode_key(key))
        return None if raw is None else self._decode_value(raw)

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

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        """The value of ``key`` (None: absent)."""
        return self.data.get(key)

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
