"""The local store (RocksDB): deltas and marks load back; stale marks are not used."""

from __future__ import annotations

import random
from pathlib import Path

from streams.checkpoints import LocalStore


def _state(seed: int, n: int) -> dict[bytes, bytes]:
    prng = random.Random(seed)
    return {f"k{i}".encode(): prng.randbytes(prng.randint(0, 300)) for i in range(n)}


def test_applied_deltas_load_back_under_their_partition(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    prng = random.Random(7)
    expected: dict[tuple[str, int], dict[bytes, bytes]] = {("a", 0): {}, ("a", 1): {},
                                                          ("ab", 0): {}}
    for _ in range(30):  # batches of puts and deletes over three partitions
        deltas = []
        for _ in range(prng.randint(0, 40)):
            part = prng.choice(sorted(expected))
            key = f"u{prng.randint(0, 60)}".encode()
            value = None if prng.random() < 0.2 else prng.randbytes(prng.randint(0, 50))
            deltas.append((part, key, value))
            if value is None:
                expected[part].pop(key, None)
            else:
                expected[part][key] = value
        assert store.apply(deltas) == len(deltas)
    assert store.load(("a", 0), now_ms=0) is None  # no mark yet: not usable
    store.mark({part: 100 + i for i, part in enumerate(sorted(expected))}, now_ms=5_000)
    store.close()
    reopened = LocalStore(tmp_path / "s")  # survives the process
    for i, part in enumerate(sorted(expected)):
        assert reopened.load(part, now_ms=6_000) == (expected[part], 100 + i)
    reopened.close()


def test_a_mark_older_than_the_limit_is_not_used(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.apply([(("t", 0), b"k", b"v")])
    store.mark({("t", 0): 5}, now_ms=1_000)
    assert store.load(("t", 0), now_ms=61_000, max_age_ms=59_999) is None
    assert store.load(("t", 0), now_ms=61_000, max_age_ms=60_000) == ({b"k": b"v"}, 5)
    store.forget(("t", 0))
    assert store.load(("t", 0), now_ms=1_000) is None
    store.close()


def test_replace_drops_every_old_key_of_that_partition_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    old, new, other = _state(1, 200), _state(2, 50), _state(3, 20)
    store.apply([(("t", 1), k, v) for k, v in old.items()])
    store.apply([(("t", 2), k, v) for k, v in other.items()])
    store.apply([(("t", 10), k, v) for k, v in other.items()])
    store.replace(("t", 1), new, offset=77, now_ms=0)
    store.mark({("t", 2): 3, ("t", 10): 4}, now_ms=0)
    assert store.load(("t", 1), now_ms=0) == (new, 77)
    assert store.load(("t", 2), now_ms=0) == (other, 3)
    assert store.load(("t", 10), now_ms=0) == (other, 4)
    store.close()


def test_memtables_stay_small_while_many_deltas_are_written(tmp_path: Path) -> None:
    # RocksDB's default memtables (64 MiB, two of them) made a soak worker's RSS swing
    # by ~130 MiB; the store promises at most ~20 MiB of memtables, and loses nothing.
    store = LocalStore(tmp_path / "s")
    prng = random.Random(11)
    expected: dict[bytes, bytes] = {}
    peak = 0
    for _ in range(400):  # ~48 MiB of values, 100 deltas a batch
        deltas = []
        for _ in range(100):
            key = f"u{prng.randint(0, 20_000)}".encode()
            value = prng.randbytes(prng.randint(600, 1_800))
            expected[key] = value
            deltas.append((("t", 0), key, value))
        store.apply(deltas)
        peak = max(peak, store.memtable_bytes())
    store.mark({("t", 0): 1}, now_ms=0)
    assert 0 < peak <= 20 << 20, f"memtables reached {peak / 2**20:.1f} MiB"
    assert store.load(("t", 0), now_ms=0) == (expected, 1)
    store.close()
