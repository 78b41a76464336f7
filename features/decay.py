"""Exponentially decayed counts: ``sum(2 ** (-(t - ts) / half_life))`` over events.

State is ``[value, ref_ts]``: the decayed sum as of ``ref_ts``, the newest event
time seen; ``[]`` when empty. A newer event rescales the value to its own time; an
older one adds its weight as of ``ref_ts``. Reading rescales to the asked time.
"""

from __future__ import annotations

from math import exp2


class DecayedSum:
    """Mergeable half-life decayed event count.

    >>> agg = DecayedSum(half_life_ms=100)
    >>> s = agg.update(agg.update(agg.init(), 0, 0), 100, 100)
    >>> s, agg.result(s, 100), agg.result(s, 200)
    ([1.5, 100], 1.5, 0.75)
    """

    __slots__ = ("half_life_ms",)

    def __init__(self, half_life_ms: int) -> None:
        if half_life_ms <= 0:
            raise ValueError(f"half_life_ms must be > 0, got {half_life_ms}")
        self.half_life_ms = half_life_ms

    def __repr__(self) -> str:
        return f"DecayedSum(half_life_ms={self.half_life_ms})"

    def init(self) -> list[float]:
        """No event yet: a decayed count of 0.

        >>> DecayedSum(10).init()
        []
        """
        return []

    def update(
        self, state: list[float], ts_ms: int, as_of_ms: int, weight: float = 1.0
    ) -> list[float]:
        """Add an event at ``ts_ms`` (mutating ``state``); ``as_of_ms`` is not needed.

        >>> DecayedSum(100).update([1.0, 100], 0, 100)
        [1.5, 100]
        """
        if not state:
            state.append(weight)
            state.append(ts_ms)
            return state
        value, ref = state
        if ts_ms >= ref:
            state[0] = value * exp2((ref - ts_ms) / self.half_life_ms) + weight
            state[1] = ts_ms
        else:
            state[0] = value + weight * exp2((ts_ms - ref) / self.half_life_ms)
        return state

    def merge(self, a: list[float], b: list[float]) -> list[float]:
        """A new state holding the events of both, referenced to the later time.

        >>> DecayedSum(100).merge([1.0, 0], [1.0, 100])
        [1.5, 100]
        """
        if not a:
            return list(b)
        if not b:
            return list(a)
        ref = max(a[1], b[1])
        return [self.result(a, int(ref)) + self.result(b, int(ref)), ref]

    def result(self, state: list[float], as_of_ms: int) -> float:
        """The decayed count as of ``as_of_ms`` (at or after every event).

        >>> DecayedSum(100).result([], 5), DecayedSum(100).result([2.0, 0], 300)
        (0.0, 0.25)
        """
        if not state:
            return 0.0
        value, ref = state
        return value * exp2((ref - as_of_ms) / self.half_life_ms)
