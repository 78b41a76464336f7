"""What the processors take and give: input records, outputs, batch results, counters.

Also the small pieces around delivery: dead-letter records, batched internal
messages that stay under the broker's size limit, and the sequencing of consumed
records by offset (Faust can deliver records again, or skip some).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from events.contracts import SCHEMA_VERSION

SOURCES = ("clicks", "predictions")


@dataclass(slots=True)
class InputRecord:
    """One consumed Kafka record, as the processors need it."""

    source: str  # logical topic: "clicks", "predictions" or "items_repartition"
    topic: str  # the broker topic it came from
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class Output:
    """A record to publish on a logical topic (partition None: by key)."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None


@dataclass(slots=True)
class BatchResult:
    """What one batch produced: state writes per (partition, key) and output records.

    Writes hold the decoded state (None: delete the key); the worker serializes them
    for its table, the replay runner keeps them as they are.
    """

    writes: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    label_writes: dict[tuple[int, str], dict[str, Any] | None] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)


@dataclass(slots=True)
class Counters:
    """Running totals, exported as metrics and shown by the live summary."""

    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    dead_letters: int = 0
    late_events: int = 0
    duplicates: int = 0
    #: input partitions sought back to the next unprocessed record (see streams/app.py)
    seeks: int = 0
    features_published: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        return {"events": dict(self.events), "dead_letters": self.dead_letters,
                "late_events": self.late_events, "duplicates": self.duplicates,
                "seeks": self.seeks,
                "features_published": dict(self.features_published)}


#: Largest value of one batched internal message (the broker default max is 1 MiB).
MAX_BATCH_MESSAGE_BYTES = 512 * 1024


def batched_outputs(topic: str, partition: int, entries: list[Any],
                    body: Callable[[list[Any]], dict[str, Any]],
                    limit: int = MAX_BATCH_MESSAGE_BYTES) -> list[Output]:
    """``entries`` as few messages as fit ``limit`` bytes each (halved until they do).

    >>> outs = batched_outputs("t", 0, list(range(100)), lambda e: {"e": e}, limit=120)
    >>> [len(orjson.loads(o.value)["e"]) for o in outs]
    [25, 25, 25, 25]
    """
    value = orjson.dumps(body(entries))
    if len(value) <= limit or len(entries) <= 1:
        return [Output(topic, None, value, partition)]
    half = len(entries) // 2
    return (batched_outputs(topic, partition, entries[:half], body, limit)
            + batched_outputs(topic, partition, entries[half:], body, limit))


def latest(key: Any, *positions: dict[Any, int]) -> int | None:
    """The largest offset any of ``positions`` holds for ``key`` (None: none holds it).

    >>> latest("a", {"a": 3}, {"a": 7, "b": 1}), latest("c", {"a": 3})
    (7, None)
    """
    offsets = [p[key] for p in positions if key in p]
    return max(offsets) if offsets else None


def dead_letter(rec: InputRecord, reason: str) -> Output:
    """The ``dead-letters`` record for an input that could not be used."""
    text: str | None
    try:
        text = rec.value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    body = {
        "schema_version": SCHEMA_VERSION,
        "reason": reason,
        "source": {"topic": rec.topic, "logical": rec.source, "partition": rec.partition,
                   "offset": rec.offset},
        "key_b64": None if rec.key is None else base64.b64encode(rec.key).decode(),
        "value_b64": base64.b64encode(rec.value).decode(),
        "value_text": text,
    }
    return Output("dead_letters", rec.key, orjson.dumps(body))


class InputSequence:
    """Takes each input partition's records strictly in offset order from a known start.

    A partition's start is the offset after the last one durably processed (kept in
    the user table with the state), or its first offset if none ever was; Faust's
    committed offset is not trusted for this. A record below the expected offset was
    processed already: dropped. One above it means records were skipped: the caller
    seeks the partition back to the expected offset, and its records are dropped until
    that one comes.

    >>> seq = InputSequence()
    >>> rec = lambda off: InputRecord("clicks", "t", 0, off, None, b"")
    >>> seq.start(("t", 0), 5)
    >>> kept, seek = seq.accept([rec(4), rec(5), rec(6)])
    >>> [r.offset for r in kept], seek
    ([5, 6], {})
    >>> kept, seek = seq.accept([rec(9), rec(10)])       # 7 and 8 never came
    >>> [r.offset for r in kept], seek
    ([], {('t', 0): 7})
    >>> [r.offset for r in seq.accept([rec(11), rec(7), rec(8)])[0]]
    [7, 8]
    >>> other = InputRecord("item_snapshots", "s", 0, 3, None, b"")
    >>> seq.accept([other])[0] == [other]                # no start set: passed through
    True
    """

    def __init__(self) -> None:
        self._expected: dict[tuple[str, int], int] = {}
        self._seeking: set[tuple[str, int]] = set()

    def known(self, tp: tuple[str, int]) -> bool:
        """Whether the partition's start is set."""
        return tp in self._expected

    def start(self, tp: tuple[str, int], offset: int) -> None:
        """Set where the partition's records must start (if not set already)."""
        self._expected.setdefault(tp, offset)

    def accept(self, batch: Sequence[InputRecord]
               ) -> tuple[list[InputRecord], dict[tuple[str, int], int]]:
        """The records to process, and the partitions to seek (to their expected offset)."""
        out: list[InputRecord] = []
        seek: dict[tuple[str, int], int] = {}
        expected, seeking = self._expected, self._seeking
        for rec in batch:
            tp = (rec.topic, rec.partition)
            want = expected.get(tp)
            if want is None:  # a partition whose start is not managed here
                out.append(rec)
            elif rec.offset == want:
                seeking.discard(tp)
                expected[tp] = rec.offset + 1
                out.append(rec)
            elif rec.offset > want and tp not in seeking:
                seeking.add(tp)
                seek[tp] = want
        return out, seek

    def forget(self, tps: set[tuple[str, int]] | None = None) -> None:
        """Forget the given partitions (all: None), e.g. when they are revoked."""
        if tps is None:
            self._expected.clear()
            self._seeking.clear()
        else:
            for tp in tps:
                self._expected.pop(tp, None)
                self._seeking.discard(tp)
