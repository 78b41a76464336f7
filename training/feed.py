"""Label order over partitioned input, with positions a restart resumes from exactly.

The trainer's input is ``training-examples`` read from several partitions (Kafka
partitions; or files, a file per partition and its line numbers as offsets) plus
label watermarks. Maturity mirrors :mod:`evaluation.evaluator`: a final example is
held until the global label watermark ``T`` (the minimum over the engine's
``label_partitions`` of their latest ``label_watermark_ms``; unknown until each has
reported) passes it, ``prediction_ts < T``; then every held example below ``T`` is
applied in ``(prediction_ts, prediction_id, label_version)`` order (*label order*).
An example held with ``prediction_ts`` below the watermark already applied is *late*:
it is applied first at the next maturation (counted; the engine should not publish
one, see the README's Known issues).

Cross-topic order: a watermark ``T`` is read on another topic than the examples it
covers. The examples of ``T`` were committed before ``T`` was, so ``T`` is used only
once the examples read cover every partition up to the end offsets it had when ``T``
was read (``required``, given by the caller).

Positions. Maturation ``m`` applies everything held with ``ts < T_m``, so after it
the applied set is exactly ``{read before it (offset < C_m[p]), ts < T_m}``. During
maturation ``m+1`` (to ``T``; nothing is read meanwhile) the examples applied so far
are also those read before it with key <= ``after``, the last key applied. The
position is that, plus the lowest offset still held per partition (``low``) and the
watermark bookkeeping, as JSON. :meth:`LabelOrderFeed.resume` re-reads ``[low,
consumed)`` of each partition, skips what the rule says was applied, holds the rest,
and continues the maturation: the sequence of applied examples is exactly that of a
run that never stopped.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from typing import Any

import msgspec

Key = tuple[int, str, int]
Position = dict[str, Any]


class _KeyFields(msgspec.Struct):
    prediction_id: str
    label_version: int
    prediction_ts: int
    final: bool


_decode_key = msgspec.json.Decoder(_KeyFields).decode


def example_key(raw: bytes) -> Key | None:
    """The label-order key of a ``training-examples`` value; None when it is not final.

    Raises ValueError for a value without the key fields.

    >>> example_key(b'{"prediction_id":"p1","label_version":1,"prediction_ts":5,"final":true}')
    (5, 'p1', 1)
    >>> example_key(b'{"prediction_id":"p1","label_version":1,"prediction_ts":5,"final":false}')
    >>> example_key(b'{"prediction_id":"p1"}')
    Traceback (most recent call last):
    ...
    ValueError: not a training example: Object missing required field `label_version`
    """
    try:
        fields = _decode_key(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"not a training example: {exc}") from None
    if not fields.final:
        return None
    return (fields.prediction_ts, fields.prediction_id, fields.label_version)


def _ints(d: dict[str, Any], name: str) -> dict[int, int]:
    value = d.get(name)
    if not isinstance(value, dict):
        raise ValueError(f"position field '{name}' must be an object, got {value!r}")
    return {int(k): int(v) for k, v in value.items()}


def _strs(d: dict[int, int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(d.items())}


class LabelOrderFeed:
    """Holds final examples until the label watermark passes them; yields them in label order.

    >>> feed = LabelOrderFeed(label_partitions=1)
    >>> for off, (ts, pid) in enumerate([(30, "c"), (10, "b"), (10, "a"), (50, "d")]):
    ...     _ = feed.hold(0, off, (ts, pid, 1), pid.encode())
    >>> feed.seen(0, 4)
    >>> feed.add_label_watermarks({0: 40}, required={0: 4})
    >>> [(value, pos["after"]) for value, pos in feed.mature()]
    [(b'a', [10, 'a', 1]), (b'b', [10, 'b', 1]), (b'c', [30, 'c', 1])]
    >>> feed.position()["low"], feed.held
    ({'0': 3}, 1)
    """

    def __init__(self, label_partitions: int) -> None:
        if isinstance(label_partitions, bool) or not isinstance(label_partitions, int) or \
                label_partitions < 1:
            raise ValueError(f"label_partitions must be an integer >= 1, got {label_partitions!r}")
        self.label_partitions = label_partitions
        self.consumed: dict[int, int] = {}
        self.watermark_offsets: dict[int, int] = {}
        self.watermarks: dict[int, int] = {}
        self.applied_watermark: int | None = None
        self.applied_consumed: dict[int, int] = {}
        self.maturing: int | None = None
        self.after: Key | None = None
        self._candidates: deque[tuple[int, dict[int, int]]] = deque()
        self._heap: list[tuple[int, str, int, int, int, bytes]] = []
        self._low: dict[int, list[int]] = {}
        self._gone: set[tuple[int, int]] = set()
        self._recover: dict[int, int] | None = None
        self._recover_from: dict[int, int] = {}
        self.counters = {"held": 0, "applied": 0, "late": 0, "duplicates": 0,
                         "skipped_on_resume": 0, "not_final": 0, "invalid": 0}

    @property
    def held(self) -> int:
        """Examples held, not yet applied.

        >>> LabelOrderFeed(1).held
        0
        """
        return len(self._heap)

    # -- input -------------------------------------------------------------------------

    def seen(self, partition: int, next_offset: int) -> None:
        """Everything of ``partition`` below ``next_offset`` has been given to the feed.

        >>> feed = LabelOrderFeed(1); feed.seen(2, 7); feed.seen(2, 5); feed.consumed
        {2: 7}
        """
        if self._recover is not None:
            raise RuntimeError("seen() during recovery: call end_recovery() first")
        if next_offset > self.consumed.get(partition, -1):
            self.consumed[partition] = next_offset

    def _was_applied(self, partition: int, offset: int, key: Key) -> bool:
        if (self.applied_watermark is not None and key[0] < self.applied_watermark
                and offset < self.applied_consumed.get(partition, 0)):
            return True
        return self.maturing is not None and self.after is not None and key <= self.after

    def hold(self, partition: int, offset: int, key: Key, value: bytes) -> str:
        """Hold one final example read at ``offset``: ``held``, ``late`` or ``skipped``.

        While recovering (after :meth:`resume`), an example the position says was
        applied is ``skipped``.

        >>> feed = LabelOrderFeed(1); feed.hold(0, 0, (5, "p", 1), b"{}")
        'held'
        """
        if self._recover is not None:
            if offset >= self._recover.get(partition, 0):
                raise ValueError(f"offset {offset} of partition {partition} is past the "
                                 "recovery range: stop re-reading there")
            if self._was_applied(partition, offset, key):
                self.counters["skipped_on_resume"] += 1
                return "skipped"
        heapq.heappush(self._heap, (*key, partition, offset, value))
        heapq.heappush(self._low.setdefault(partition, []), offset)
        self.counters["held"] += 1
        if self._recover is None:
            self.seen(partition, offset + 1)
            if self.applied_watermark is not None and key[0] < self.applied_watermark:
                self.counters["late"] += 1
                return "late"
        return "held"

    def offer(self, partition: int, offset: int, raw: bytes | None) -> str:
        """Hold a raw ``training-examples`` value if it is final; its fate, counted.

        ``held``, ``late`` or ``skipped`` (see :meth:`hold`), ``not_final``, or
        ``invalid`` (no key fields: not JSON, a null value, ...).

        >>> feed = LabelOrderFeed(1)
        >>> [feed.offer(0, i, raw) for i, raw in enumerate([b"{}", None, b'{"prediction_id":"p",'
        ...  b'"label_version":1,"prediction_ts":1,"final":false}'])]
        ['invalid', 'invalid', 'not_final']
        >>> feed.counters["invalid"], feed.consumed
        (2, {0: 3})
        """
        try:
            key = example_key(raw or b"")
        except ValueError:
            key, status = None, "invalid"
        else:
            status = "not_final"
        if key is not None:
            return self.hold(partition, offset, key, raw or b"")
        self.counters[status] += 1
        if self._recover is None:
            self.seen(partition, offset + 1)
        return status

    def seen_watermark_offset(self, partition: int, next_offset: int) -> None:
        """The label-watermarks input is read up to ``next_offset`` on ``partition``.

        >>> feed = LabelOrderFeed(1); feed.seen_watermark_offset(0, 3); feed.watermark_offsets
        {0: 3}
        """
        if next_offset > self.watermark_offsets.get(partition, -1):
            self.watermark_offsets[partition] = next_offset

    def add_label_watermarks(self, values: dict[int, int], required: dict[int, int]) -> None:
        """Per-partition label watermarks read, and the examples' end offsets at that time.

        >>> feed = LabelOrderFeed(2); feed.add_label_watermarks({0: 9}, {0: 0})
        >>> feed.global_watermark() is None    # partition 1 has not reported
        True
        """
        for part, value in values.items():
            if not 0 <= part < self.label_partitions:
                raise ValueError(f"label watermark of partition {part}, but there are "
                                 f"{self.label_partitions} label partitions")
            if value > self.watermarks.get(part, -(2**63)):
                self.watermarks[part] = value
        t = self.global_watermark()
        last = self._candidates[-1][0] if self._candidates else (
            self.maturing if self.maturing is not None else self.applied_watermark)
        if t is not None and (last is None or t > last):
            self._candidates.append((t, dict(required)))

    def global_watermark(self) -> int | None:
        """The minimum of every label partition's watermark; None until all reported.

        >>> feed = LabelOrderFeed(2); feed.add_label_watermarks({0: 9, 1: 4}, {})
        >>> feed.global_watermark()
        4
        """
        if len(self.watermarks) < self.label_partitions:
            return None
        return min(self.watermarks.values())

    # -- maturing ----------------------------------------------------------------------

    def _target(self) -> int | None:
        target = None
        while self._candidates and all(self.consumed.get(p, 0) >= off
                                       for p, off in self._candidates[0][1].items()):
            target = self._candidates.popleft()[0]
        return target

    def _low_of(self, partition: int) -> int:
        offsets = self._low.get(partition)
        while offsets and (partition, offsets[0]) in self._gone:
            self._gone.discard((partition, heapq.heappop(offsets)))
        return offsets[0] if offsets else self.consumed.get(partition, 0)

    def mature(self) -> Iterator[tuple[bytes, Position]]:
        """Apply, in label order, every held example below the usable watermark.

        Yields each value with the position right after it. The caller must not hold
        new examples until the iterator is exhausted; stopping early (a signal) leaves
        a position mid-maturation, which :meth:`resume` continues.

        >>> list(LabelOrderFeed(1).mature())
        []
        """
        if self._recover is not None:
            raise RuntimeError("mature() during recovery: call end_recovery() first")
        if self.maturing is None:
            target = self._target()
            if target is None or (self.applied_watermark is not None
                                  and target <= self.applied_watermark):
                return
            self.maturing, self.after = target, None
        base = self._base()
        heap = self._heap
        while heap and heap[0][0] < self.maturing:
            ts, pid, version, part, offset, value = heapq.heappop(heap)
            self._gone.add((part, offset))
            key = (ts, pid, version)
            if key == self.after:
                self.counters["duplicates"] += 1
                continue
            self.after = key
            self.counters["applied"] += 1
            yield value, {**base, "after": [ts, pid, version],
                          "low": {str(p): self._low_of(p) for p in sorted(self.consumed)}}
        self.applied_watermark, self.applied_consumed = self.maturing, dict(self.consumed)
        self.maturing = self.after = None

    # -- positions ---------------------------------------------------------------------

    def _base(self) -> Position:
        return {"label_partitions": self.label_partitions,
                "consumed": _strs(self.consumed),
                "applied_watermark": self.applied_watermark,
                "applied_consumed": _strs(self.applied_consumed),
                "maturing": self.maturing,
                "label_watermarks": {"offsets": _strs(self.watermark_offsets),
                                     "values": _strs(self.watermarks),
                                     "pending": [[t, _strs(req)] for t, req in self._candidates]}}

    def position(self) -> Position:
        """Where the input stands now, as JSON (see the module doc).

        >>> LabelOrderFeed(1).position()["after"] is None
        True
        """
        after = None if self.after is None else list(self.after)
        return {**self._base(), "after": after,
                "low": {str(p): self._low_of(p) for p in sorted(self.consumed)}}

    @classmethod
    def resume(cls, position: Position) -> LabelOrderFeed:
        """A feed at ``position``, recovering: re-read :meth:`recovery_ranges`, then continue.

        >>> feed = LabelOrderFeed(1)
        >>> for off, ts in enumerate([30, 10, 20]):
        ...     _ = feed.hold(0, off, (ts, f"p{off}", 1), b"%d" % off)
        >>> feed.seen(0, 3); feed.add_label_watermarks({0: 25}, {0: 3})
        >>> it = feed.mature(); value, pos = next(it)   # stopped after one example
        >>> again = LabelOrderFeed.resume(pos); again.recovery_ranges()
        {0: (0, 3)}
        >>> [again.hold(0, off, (ts, f"p{off}", 1), b"%d" % off)
        ...  for off, ts in enumerate([30, 10, 20])]
        ['held', 'skipped', 'held']
        >>> again.end_recovery(); [v for v, _ in again.mature()]
        [b'2']
        """
        feed = cls(int(position["label_partitions"]))
        feed.consumed = _ints(position, "consumed")
        feed.applied_consumed = _ints(position, "applied_consumed")
        for name in ("applied_watermark", "maturing"):
            value = position.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"position field '{name}' must be an integer or null")
            setattr(feed, name, value)
        after = position.get("after")
        feed.after = None if after is None else (int(after[0]), str(after[1]), int(after[2]))
        wm = position["label_watermarks"]
        feed.watermark_offsets = _ints(wm, "offsets")
        feed.watermarks = _ints(wm, "values")
        feed._candidates = deque((int(t), {int(k): int(v) for k, v in req.items()})
                                 for t, req in wm["pending"])
        low = _ints(position, "low")
        feed._recover = dict(feed.consumed)
        feed._recover_from = {p: min(low.get(p, c), c) for p, c in feed.consumed.items()}
        return feed

    def recovery_ranges(self) -> dict[int, tuple[int, int]]:
        """``partition -> [from, to)`` offsets to re-read after :meth:`resume` (may be empty).

        >>> LabelOrderFeed(1).recovery_ranges()
        {}
        """
        if self._recover is None:
            return {}
        return {p: (self._recover_from[p], end) for p, end in sorted(self._recover.items())
                if self._recover_from[p] < end}

    def end_recovery(self) -> None:
        """The recovery ranges have been re-read: back to normal input.

        >>> LabelOrderFeed(1).end_recovery()
        """
        self._recover = None
