"""streams.batches without a broker: how consumed messages are sorted into a loop's
input, and the pipelined commit (one transaction in flight, aborted or stuck ones)."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError

from engine import Result
from streams.batches import Batch, BatchSizes, Committed, Pending, Pipelined
from streams.transactions import TransactionAborted

KINDS = {"preds": "predictions", "clicks": "clicks", "snaps": "item_snapshots",
         "items": "items_repartition"}


@dataclass
class Msg:
    """What a confluent-kafka message answers (the calls Pending.take makes)."""

    t: str
    p: int
    o: int
    k: bytes | None = b"k"
    v: bytes | None = b"{}"
    err: KafkaError | None = None

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v

    def error(self) -> KafkaError | None:
        return self.err


def test_take_sorts_by_kind_and_owned_partition() -> None:
    rng = random.Random(7)
    users, items = {0, 2}, {1, 2}
    msgs = [Msg(rng.choice(list(KINDS)), rng.randrange(4), o, f"k{o}".encode(),
                f"v{o}".encode()) for o in range(300)]
    msgs.insert(50, Msg("preds", 0, -1, err=KafkaError(KafkaError._PARTITION_EOF)))
    msgs.insert(90, Msg("clicks", 2, -1, err=KafkaError(KafkaError._TRANSPORT)))
    pending = Pending()
    pending.take(msgs, KINDS, users, items)
    # the oracle: each kind's records of owned partitions, in consumed order
    ok = [m for m in msgs if m.err is None
          and m.p in (items if KINDS[m.t] == "items_repartition" else users)]
    want_users: dict[int, list[Any]] = {}
    want_items: dict[int, list[Any]] = {}
    want_snaps: dict[int, list[Any]] = {}
    for m in ok:
        kind = KINDS[m.t]
        if kind == "items_repartition":
            want_items.setdefault(m.p, []).append((m.o, m.v, m.k))
        elif kind == "item_snapshots":
            want_snaps.setdefault(m.p, []).append((m.o, m.v, m.k))
        else:
            want_users.setdefault(m.p, []).append((int(kind == "predictions"), m.o, m.k, m.v))
    assert dict(pending.users) == want_users
    assert {p: [(o, v) for o, v, _ in rs] for p, rs in want_items.items()} == dict(pending.items)
    assert {p: [k for _, _, k in rs] for p, rs in want_items.items()} == dict(pending.item_keys)
    assert {p: [(o, v) for o, v, _ in rs] for p, rs in want_snaps.items()} == dict(
        pending.snapshots)
    assert {p: [k for _, _, k in rs] for p, rs in want_snaps.items()} == dict(
        pending.snapshot_keys)
    assert pending.count == len(ok)
    assert pending.offsets == {(m.t, m.p): max(x.o for x in ok if (x.t, x.p) == (m.t, m.p)) + 1
                               for m in ok}


class FakeTxn:
    """Commits (once ``release`` is set, when given) or raises ``error``."""

    stuck_s = 0.5
    last_phases_ms = (1.5, 2.5, 3.5)

    def __init__(self, error: BaseException | None = None,
                 release: threading.Event | None = None) -> None:
        self.error = error
        self.release = release
        self.committed: list[Any] = []
        self.replaced = 0

    def commit(self, outputs: Any, deltas: Any, offsets: Any, metadata: Any) -> None:
        if self.release is not None:
            self.release.wait(5)
        if self.error is not None:
            raise self.error
        self.committed.append(offsets)

    def replace_stuck(self) -> None:
        self.replaced += 1


def batch(n: int) -> Batch:
    return Batch(Result(), {("preds", 0): n}, None, n, 0.0, 0.0)


@pytest.mark.parametrize(("txn", "outcome"), [
    (FakeTxn(), "committed"),
    (FakeTxn(error=TransactionAborted("broker restarted")), "aborted"),
    (FakeTxn(release=threading.Event()), "stuck"),  # released only after the stuck time
])
def test_pipelined_settles_one_transaction(txn: FakeTxn, outcome: str) -> None:
    commits = Pipelined(txn)  # type: ignore[arg-type]
    assert not commits.busy and commits.settle() is None
    b = batch(3)
    commits.submit(b)
    assert commits.busy
    if outcome == "committed":
        done = commits.settle()
        assert done is not None and done[0] is b and txn.committed == [b.offsets]
        assert done[1].phases_ms == txn.last_phases_ms
        assert done[1].submitted <= done[1].committed
    else:
        with pytest.raises(TransactionAborted):
            commits.settle()
        assert txn.replaced == (outcome == "stuck") and txn.committed == []
    assert not commits.busy and commits.settle() is None  # settled once
    if txn.release is not None:
        txn.release.set()


def test_batch_sizes_split_each_commit_into_its_wait_and_phases() -> None:
    rng = random.Random(11)
    sizes = BatchSizes()
    rows = []
    for _ in range(257):
        started = rng.uniform(0, 100)
        processed = started + rng.uniform(0, 0.5)
        submitted = processed + rng.uniform(0, 0.2)
        phases = (rng.uniform(0, 50), rng.uniform(0, 50), rng.uniform(0, 50))
        committed = submitted + sum(phases) / 1000
        n = rng.randrange(1, 5000)
        sizes.add(n, started, processed, Committed(submitted, committed, phases))
        rows.append((n, [(processed - started) * 1000, (committed - processed) * 1000,
                         (submitted - processed) * 1000, *phases]))
    got = sizes.as_dict()
    counts = [n for n, _ in rows]
    assert (got["batches"], got["min"], got["max"], got["last"]) == (
        len(rows), min(counts), max(counts), counts[-1])
    assert got["mean"] == pytest.approx(sum(counts) / len(counts))
    # the oracle: nearest-rank percentiles (index q * (n - 1)) over the kept batches
    for i, name in enumerate(("process", "commit", "queue", "produce", "offsets", "end")):
        values = sorted(r[i] for _, r in rows)
        for q in (50, 99):
            assert got[f"{name}_ms_p{q}"] == pytest.approx(values[int(q / 100 * 256)])
