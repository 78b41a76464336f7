"""Label maturity: the label watermark T, "every prediction with ts < T has its final label".

Rule, per partition with watermark ``W`` (no prediction arrives with ``ts < W``) and
``E`` = the smallest ``ts`` of a prediction that is still open (has no final label yet;
:meth:`labels.machine.LabelMachine.earliest_open_ts_ms`, over all keys of the
partition)::

    T = min(W, E)        (T = W when nothing is open; undefined while W is unknown)

Every prediction with ``ts < W`` has arrived, and every one that arrived and is not open
is final, so all predictions with ``ts < min(W, E)`` are final. Since a window closes at
``W >= pred.ts + window_ms + skew_ms``, ``T >= W - window_ms - skew_ms`` once the stream
layer has acted on due deadlines; ``T`` is exact (not that lower bound), so it also
advances early when every open prediction got its label by a click. For a topic,
``T`` is the minimum over its partitions. A prediction arriving behind the watermark
(late) may be labelled after ``T`` passed it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


def label_watermark_ms(watermark_ms: int | None, earliest_open_ts_ms: int | None) -> int | None:
    """``min(watermark, earliest open prediction ts)``; None while the watermark is unknown.

    >>> label_watermark_ms(10_000, None), label_watermark_ms(10_000, 4_000)
    (10000, 4000)
    >>> label_watermark_ms(None, 4_000) is None
    True
    """
    if watermark_ms is None:
        return None
    if earliest_open_ts_ms is None:
        return watermark_ms
    return min(watermark_ms, earliest_open_ts_ms)


def combine_label_watermarks(values: Iterable[int | None]) -> int | None:
    """The label watermark of several partitions: their minimum, None if any is unknown.

    >>> combine_label_watermarks([5, 3, 9]), combine_label_watermarks([5, None])
    (3, None)
    >>> combine_label_watermarks([]) is None
    True
    """
    result: int | None = None
    for value in values:
        if value is None:
            return None
        result = value if result is None else min(result, value)
    return result


class OpenPredictions:
    """Earliest open prediction ts per table key of one partition (a lazy min-heap).

    >>> op = OpenPredictions()
    >>> op.update("u1", 5_000); op.update("u2", 3_000)
    >>> op.earliest_ms(), op.label_watermark_ms(9_000)
    (3000, 3000)
    >>> op.update("u2", None)   # u2 has no open prediction any more
    >>> op.earliest_ms(), len(op)
    (5000, 1)
    """

    __slots__ = ("_by_key", "_heap")

    def __init__(self) -> None:
        self._by_key: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        """How many keys have an open prediction.

        >>> len(OpenPredictions())
        0
        """
        return len(self._by_key)

    def update(self, key: str, earliest_open_ts_ms: int | None) -> None:
        """Set ``key``'s earliest open prediction ts (None: nothing open).

        >>> op = OpenPredictions(); op.update("u", 7); op.update("u", 9); op.earliest_ms()
        9
        """
        if earliest_open_ts_ms is None:
            self._by_key.pop(key, None)
        elif self._by_key.get(key) != earliest_open_ts_ms:
            self._by_key[key] = earliest_open_ts_ms
            heapq.heappush(self._heap, (earliest_open_ts_ms, key))
        if len(self._heap) > 2 * len(self._by_key) + 64:
            self._heap = [(ts, k) for k, ts in self._by_key.items()]
            heapq.heapify(self._heap)

    def earliest_ms(self) -> int | None:
        """The smallest open prediction ts over all keys, or None.

        >>> OpenPredictions().earliest_ms() is None
        True
        """
        heap = self._heap
        while heap and self._by_key.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # stale entry
        return heap[0][0] if heap else None

    def label_watermark_ms(self, watermark_ms: int | None) -> int | None:
        """This partition's label watermark at ``watermark_ms`` (see the module rule).

        >>> OpenPredictions().label_watermark_ms(1_000)
        1000
        """
        return label_watermark_ms(watermark_ms, self.earliest_ms())
