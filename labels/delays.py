"""Per-model click-delay statistics from mergeable quantile sketches.

Why not ``river.stats.Quantile``: River's P-square estimator is one object per quantile,
depends on arrival order, cannot be merged across partitions or workers and is not
JSON-serializable. :class:`DelaySketch` is a DDSketch-style log-bucket histogram
instead: bucket ``k`` holds delays in ``(gamma**(k-1), gamma**k]`` with
``gamma = (1 + e) / (1 - e)``, so any quantile is returned within relative error ``e``
(1 % by default); adding is O(1), merging is adding counts (exact, order-free), and the
state is a small JSON dict (about 1,000 buckets cover 1 ms .. 30 days at 1 %).
:class:`DelayStats` lives in worker memory and can be rebuilt from the ``labels`` topic
or merged from other workers.

Quantiles cover every observed delay: first clicks inside the window (positives) and
late clicks after it, so ``p99`` may exceed the window; ``share_within_window`` says how
much of the delay distribution the window captures.
"""

from __future__ import annotations

import math
from typing import Any


class DelaySketch:
    """Mergeable quantile sketch of non-negative delays (relative error ``relative_error``).

    >>> sk = DelaySketch()
    >>> for d in range(1, 1_001):
    ...     sk.add(d)
    >>> sk.count, abs(sk.quantile(0.5) - 500) <= 0.01 * 500
    (1000, True)
    >>> DelaySketch().quantile(0.5) is None
    True
    """

    __slots__ = ("_buckets", "_gamma_log", "_zero", "relative_error")

    def __init__(self, relative_error: float = 0.01) -> None:
        if not 0.0 < relative_error < 1.0:
            raise ValueError(f"relative_error must be in (0, 1), got {relative_error}")
        self.relative_error = relative_error
        self._gamma_log = math.log((1.0 + relative_error) / (1.0 - relative_error))
        self._zero = 0
        self._buckets: dict[int, int] = {}

    @property
    def count(self) -> int:
        """How many delays were added.

        >>> DelaySketch().count
        0
        """
        return self._zero + sum(self._buckets.values())

    def add(self, delay_ms: float, n: int = 1) -> None:
        """Count ``n`` occurrences of ``delay_ms`` (>= 0).

        >>> sk = DelaySketch()
        >>> sk.add(0); sk.add(250, n=3); sk.count
        4
        """
        if delay_ms < 0 or math.isnan(delay_ms):
            raise ValueError(f"delay must be >= 0 ms, got {delay_ms}")
        if delay_ms == 0:
            self._zero += n
            return
        key = math.ceil(math.log(delay_ms) / self._gamma_log)
        self._buckets[key] = self._buckets.get(key, 0) + n

    def _value(self, key: int) -> float:
        gamma = math.exp(self._gamma_log)
        return 2.0 * gamma**key / (gamma + 1.0)

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (lower, rank ``q * (count - 1)``), or None when empty.

        >>> sk = DelaySketch(relative_error=0.02)
        >>> sk.add(0, n=9); sk.add(1_000)
        >>> sk.quantile(0.5), abs(sk.quantile(1.0) - 1_000) <= 0.02 * 1_000
        (0.0, True)
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        total = self.count
        if total == 0:
            return None
        rank = q * (total - 1)
        seen = self._zero
        if seen > rank:
            return 0.0
        for key in sorted(self._buckets):
            seen += self._buckets[key]
            if seen > rank:
                return self._value(key)
        return self._value(max(self._buckets))

    def merge(self, other: DelaySketch) -> None:
        """Add ``other``'s counts (same ``relative_error`` required).

        >>> a, b = DelaySketch(), DelaySketch()
        >>> a.add(10); b.add(20); a.merge(b); a.count
        2
        """
        if other.relative_error != self.relative_error:
            raise ValueError("cannot merge sketches with different relative errors")
        self._zero += other._zero
        for key, n in other._buckets.items():
            self._buckets[key] = self._buckets.get(key, 0) + n

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` restores it.

        >>> sk = DelaySketch(); sk.add(5)
        >>> DelaySketch.from_dict(sk.to_dict()).count
        1
        """
        return {
            "relative_error": self.relative_error,
            "zero": self._zero,
            "buckets": {str(k): n for k, n in sorted(self._buckets.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DelaySketch:
        """Rebuild a sketch from :meth:`to_dict` output.

        >>> DelaySketch.from_dict({"relative_error": 0.01, "zero": 2, "buckets": {}}).count
        2
        """
        sketch = cls(float(data["relative_error"]))
        sketch._zero = int(data["zero"])
        sketch._buckets = {int(k): int(n) for k, n in data["buckets"].items()}
        return sketch


class DelayStats:
    """Click-delay quantiles and window coverage per model.

    >>> st = DelayStats()
    >>> for d in (1_000, 2_000, 3_000):
    ...     st.observe("m1", d, within_window=True)
    >>> st.observe("m1", 7_200_000, within_window=False)
    >>> snap = st.snapshot()["m1"]
    >>> snap["positives"], snap["clicks"], snap["share_within_window"]
    (3, 4, 0.75)
    >>> abs(snap["p50"] - 2_000) <= 20
    True
    """

    __slots__ = ("_models", "relative_error")

    def __init__(self, relative_error: float = 0.01) -> None:
        DelaySketch(relative_error)  # validates
        self.relative_error = relative_error
        self._models: dict[str, tuple[DelaySketch, list[int]]] = {}

    def observe(self, model_id: str, delay_ms: int, within_window: bool) -> None:
        """Record one click delay of ``model_id`` (``within_window``: it made a positive).

        >>> st = DelayStats(); st.observe("m", 10, within_window=False)
        >>> st.snapshot()["m"]["positives"]
        0
        """
        entry = self._models.get(model_id)
        if entry is None:
            entry = self._models[model_id] = (DelaySketch(self.relative_error), [0, 0])
        sketch, counts = entry
        sketch.add(delay_ms)
        counts[0] += 1
        if within_window:
            counts[1] += 1

    def merge(self, other: DelayStats) -> None:
        """Add another worker's statistics.

        >>> a, b = DelayStats(), DelayStats()
        >>> a.observe("m", 5, True); b.observe("m", 9, False); a.merge(b)
        >>> a.snapshot()["m"]["clicks"]
        2
        """
        for model_id, (sketch, counts) in other._models.items():
            entry = self._models.get(model_id)
            if entry is None:
                entry = self._models[model_id] = (DelaySketch(self.relative_error), [0, 0])
            entry[0].merge(sketch)
            entry[1][0] += counts[0]
            entry[1][1] += counts[1]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{model_id: {p50, p90, p99, positives, clicks, share_within_window}}``.

        >>> DelayStats().snapshot()
        {}
        """
        out: dict[str, dict[str, Any]] = {}
        for model_id in sorted(self._models):
            sketch, (clicks, positives) = self._models[model_id]
            out[model_id] = {
                "p50": sketch.quantile(0.5),
                "p90": sketch.quantile(0.9),
                "p99": sketch.quantile(0.99),
                "positives": positives,
                "clicks": clicks,
                "share_within_window": positives / clicks if clicks else None,
            }
        return out
