"""What one loop of the worker takes in and how the loops went (sizes and timings)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

from engine import Result


def partitioner(partitions: int) -> Callable[[str], int]:
    """The Java client's default partition of a string key (murmur2, as Kafka Streams).

    >>> partitioner(4)("user-1") in range(4)
    True
    """

    def partition_of(key: str) -> int:
        return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions

    return partition_of


@dataclass(slots=True)
class Pending:
    """Records of one loop, by partition, and the input offsets they take the worker to."""

    users: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    snapshots: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    items: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    #: keys of the snapshot and item records (only dead letters use them)
    snapshot_keys: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    item_keys: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    count: int = 0


@dataclass(slots=True)
class Batch:
    """A processed loop waiting for (or in) its transaction."""

    result: Result
    offsets: dict[tuple[str, int], int]
    group_metadata: Any
    count: int
    started: float
    processed: float


@dataclass(slots=True)
class BatchSizes:
    """Events per processed batch (how the worker sized them: backlog vs caught up), the
    time a batch spent being processed and committed, and when input first came.

    >>> b = BatchSizes()
    >>> b.add(10, 0.0, 0.5, 0.6)
    >>> b.as_dict()["max"], round(b.as_dict()["commit_ms_p50"])
    (10, 100)
    """

    batches: int = 0
    events: int = 0
    smallest: int | None = None
    largest: int = 0
    last: int = 0
    #: wall-clock seconds when the first batch with input began, and the last one ended
    first_started: float | None = None
    last_ended: float | None = None
    #: recent (process, commit) durations in ms
    recent: list[tuple[float, float]] = field(default_factory=list)

    def add(self, n: int, started: float, processed: float, committed: float) -> None:
        """Count a batch of ``n`` input records (wall-clock seconds of its three steps)."""
        self.batches += 1
        self.events += n
        self.last = n
        self.largest = max(self.largest, n)
        self.smallest = n if self.smallest is None else min(self.smallest, n)
        if self.first_started is None:
            self.first_started = started
        self.last_ended = committed
        self.recent.append(((processed - started) * 1000, (committed - processed) * 1000))
        if len(self.recent) > 1000:
            del self.recent[:500]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        mean = self.events / self.batches if self.batches else None

        def p(values: list[float], q: float) -> float | None:
            return sorted(values)[int(q * (len(values) - 1))] if values else None

        process = [a for a, _ in self.recent]
        commit = [b for _, b in self.recent]
        return {"batches": self.batches, "min": self.smallest, "max": self.largest,
                "mean": mean, "last": self.last, "first_started": self.first_started,
                "last_ended": self.last_ended, "process_ms_p50": p(process, 0.5),
                "process_ms_p99": p(process, 0.99), "commit_ms_p50": p(commit, 0.5),
                "commit_ms_p99": p(commit, 0.99)}
