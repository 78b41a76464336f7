"""A local mirror of owned partitions' state (``FRESHET_STORE=rocksdb``), for fast restarts.

The changelog topics are the truth; the local store is a shortcut to them, kept as
Kafka Streams keeps its RocksDB stores and checkpoint files:

- after every committed transaction, the batch's changelog deltas are written to a
  local RocksDB (rocksdict) under their changelog partition;
- every ``FRESHET_CHECKPOINT_INTERVAL_MS``, at a clean stop and when partitions are
  revoked, each owned changelog partition gets a *mark*: its end offset now, when
  every delta up to it is already in the local store;
- a partition assigned again (a restart, a rebalance) loads its local state and
  reads only the changelog records from its mark on: what was committed since -- by
  this worker after the mark, or by another owner in between -- is applied on top
  (applying a record again is harmless: the latest value per key wins).

A mark older than :data:`MAX_AGE_MS` is not used (a deletion after it may have been
compacted away: tombstones live a day), nor one outside the log's offsets; the
partition is then rebuilt from the whole changelog and its local state replaced.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

import msgspec
from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

log = logging.getLogger(__name__)

#: A mark older than this is not used (changelog tombstones are kept a day).
MAX_AGE_MS: Final = 12 * 3_600_000

#: RocksDB's memtable size and count. Its defaults (64 MiB, 2) let a worker's RSS swing
#: by ~130 MiB as the memtable fills and flushes (measured in a soak); the store is only
#: written and read back on restore, so small memtables cost nothing that shows.
WRITE_BUFFER_BYTES: Final = 8 << 20
WRITE_BUFFERS: Final = 2
#: The block cache, used only while a restart loads partitions.
BLOCK_CACHE_BYTES: Final = 8 << 20

Part = tuple[str, int]


class _Mark(msgspec.Struct):
    offset: int
    written_ms: int


_encode_mark = msgspec.json.Encoder().encode
_decode_mark = msgspec.json.Decoder(_Mark).decode


def state_prefix(part: Part) -> bytes:
    """The prefix of a changelog partition's keys in the store.

    >>> state_prefix(("c", 1))
    b's\\x00\\x00\\x00\\x01c\\x00'
    """
    return b"s" + struct.pack(">I", part[1]) + part[0].encode() + b"\x00"


def _mark_key(part: Part) -> bytes:
    return b"m" + struct.pack(">I", part[1]) + part[0].encode()


def _end_of(prefix: bytes) -> bytes:
    """The smallest key after every key starting with ``prefix`` (it ends in 0x00)."""
    return prefix[:-1] + b"\x01"


def _options() -> Options:
    """RocksDB options with bounded memory: small memtables and block cache."""
    options = Options(raw_mode=True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(WRITE_BUFFERS)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(BLOCK_CACHE_BYTES))
    options.set_block_based_table_factory(table)
    return options


class LocalStore:
    """Changelog partitions' latest values and marks, in one local RocksDB."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = Rdict(str(path), _options())

    def apply(self, deltas: Iterable[tuple[Part, bytes, bytes | None]]) -> int:
        """Write committed deltas ((partition, key, value or None to delete)); their count."""
        batch = WriteBatch(raw_mode=True)
        prefixes: dict[Part, bytes] = {}
        n = 0
        for part, key, value in deltas:
            prefix = prefixes.get(part)
            if prefix is None:
                prefix = prefixes[part] = state_prefix(part)
            if value is None:
                batch.delete(prefix + key)
            else:
                batch.put(prefix + key, value)
            n += 1
        if n:
            self.db.write(batch)
        return n

    def mark(self, offsets: Mapping[Part, int], now_ms: int) -> None:
        """Record that every partition's state up to its offset is in the store."""
        batch = WriteBatch(raw_mode=True)
        for part, offset in offsets.items():
            batch.put(_mark_key(part), _encode_mark(_Mark(offset, now_ms)))
        self.db.write(batch)

    def load(self, part: Part, now_ms: int, max_age_ms: int = MAX_AGE_MS,
             ) -> tuple[dict[bytes, bytes], int] | None:
        """(latest value per key, changelog offset to read on from), or None if unusable."""
        raw = self.db.get(_mark_key(part))
        if raw is None:
            return None
        mark = _decode_mark(raw)
        if now_ms - mark.written_ms > max_age_ms:
            log.info("the local state of %s[%d] is %.0f s old: rebuilt from the changelog",
                     part[0], part[1], (now_ms - mark.written_ms) / 1000)
            return None
        prefix = state_prefix(part)
        cut = len(prefix)
        state: dict[bytes, bytes] = {}
        for key, value in self.db.items(from_key=prefix):
            if not (isinstance(key, bytes) and key.startswith(prefix)):
                break
            state[key[cut:]] = bytes(value)
        return state, mark.offset

    def replace(self, part: Part, state: Mapping[bytes, bytes], offset: int,
                now_ms: int) -> None:
        """Make ``state`` (current up to ``offset``) the partition's whole local state."""
        prefix = state_prefix(part)
        batch = WriteBatch(raw_mode=True)
        batch.delete_range(prefix, _end_of(prefix))
        for key, value in state.items():
            batch.put(prefix + key, value)
        batch.put(_mark_key(part), _encode_mark(_Mark(offset, now_ms)))
        self.db.write(batch)

    def forget(self, part: Part) -> None:
        """Drop a partition's mark (its local state can no longer be trusted)."""
        self.db.delete(_mark_key(part))

    def memtable_bytes(self) -> int:
        """Bytes held by the store's memtables now (active, immutable and pinned)."""
        return int(self.db.property_int_value("rocksdb.size-all-mem-tables") or 0)

    def close(self) -> None:
        """Close the database."""
        self.db.close()


def now_ms() -> int:
    """Wall-clock milliseconds (the age of marks)."""
    return int(time.time() * 1000)
