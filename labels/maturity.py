"""Label maturity: the label watermark T, "every prediction with ts < T has its final label".

Rule, per partition with watermark ``W`` (no prediction arrives with ``ts < W``) and
``E`` = the smallest ``ts`` of a prediction that is still open (has no final label yet;
:meth:`labels.engine.LabelEngine.earliest_open_ts`, over the partition)::

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
