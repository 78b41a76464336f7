"""Sessions as merged event-time intervals: a session ends after ``gap_ms`` without events.

State is a flat JSON list ``[start_0, end_0, count_0, start_1, end_1, count_1, ...]``
of sessions sorted by time; consecutive sessions are at least ``gap_ms`` apart.
An event joins (and may bridge) the sessions less than ``gap_ms`` from it, so the
result does not depend on arrival order. Sessions that end more than
``horizon_ms + gap_ms`` before ``as_of`` can no longer be reached by an event that
arrives at most ``horizon_ms`` late, so they are dropped; an event arriving more
than ``horizon_ms`` behind ``as_of`` is ignored.
"""

from __future__ import annotations


class Sessions:
    """Mergeable session intervals; the result is the session that contains ``as_of``.

    >>> agg = Sessions(gap_ms=10, horizon_ms=100)
    >>> s = agg.init()
    >>> for ts in (0, 5, 30, 38, 21):   # 21 arrives late and joins the 30..38 session
    ...     s = agg.update(s, ts, 38)
    >>> s, agg.result(s, 38)
    ([0, 5, 2, 21, 38, 3], (3, 17))
    """

    __slots__ = ("gap_ms", "horizon_ms")

    def __init__(self, gap_ms: int, horizon_ms: int) -> None:
        if gap_ms <= 0 or horizon_ms <= 0:
            raise ValueError(f"gap_ms and horizon_ms must be > 0, got {gap_ms}, {horizon_ms}")
        self.gap_ms = gap_ms
        self.horizon_ms = horizon_ms

    def __repr__(self) -> str:
        return f"Sessions(gap_ms={self.gap_ms}, horizon_ms={self.horizon_ms})"

    def init(self) -> list[int]:
        """No session yet.

        >>> Sessions(10, 100).init()
        []
        """
        return []

    def update(self, state: list[int], ts_ms: int, as_of_ms: int) -> list[int]:
        """Add an event at ``ts_ms`` (mutating ``state``) as of ``as_of_ms >= ts_ms``.

        >>> Sessions(10, 100).update([0, 5, 2], 15, 15)   # exactly gap_ms later: new session
        [0, 5, 2, 15, 15, 1]
        >>> Sessions(10, 100).update([0, 5, 2], 14, 14)
        [0, 14, 3]
        """
        if ts_ms < as_of_ms - self.horizon_ms:
            return state
        if not state:
            state.extend((ts_ms, ts_ms, 1))
            return state
        gap = self.gap_ms
        last_end = state[-2]
        if ts_ms >= last_end:
            if ts_ms - last_end < gap:
                state[-2] = ts_ms
                state[-1] += 1
            else:
                state.extend((ts_ms, ts_ms, 1))
        else:
            start, end, count = ts_ms, ts_ms, 1
            kept: list[tuple[int, int, int]] = []
            for j in range(0, len(state), 3):
                s, e, n = state[j], state[j + 1], state[j + 2]
                if ts_ms - e < gap and s - ts_ms < gap:
                    start, end, count = min(start, s), max(end, e), count + n
                else:
                    kept.append((s, e, n))
            kept.append((start, end, count))
            kept.sort()
            state[:] = [x for interval in kept for x in interval]
        if len(state) > 3 and state[1] <= as_of_ms - self.horizon_ms - gap:
            self._prune(state, as_of_ms)
        return state

    def _prune(self, state: list[int], as_of_ms: int) -> None:
        limit = as_of_ms - self.horizon_ms - self.gap_ms
        j = 0
        while j < len(state) and state[j + 1] <= limit:
            j += 3
        del state[:j]

    def result(self, state: list[int], as_of_ms: int) -> tuple[int, int | None]:
        """(events, last - first event ms) of the session open at ``as_of_ms``, or (0, None).

        >>> Sessions(10, 100).result([0, 5, 2], 14), Sessions(10, 100).result([0, 5, 2], 15)
        ((2, 5), (0, None))
        """
        if not state or as_of_ms - state[-2] >= self.gap_ms:
            return 0, None
        return state[-1], state[-2] - state[-3]

    def merge(self, a: list[int], b: list[int]) -> list[int]:
        """A new state with the sessions of both, joining those less than gap_ms apart.

        >>> Sessions(10, 100).merge([0, 5, 2], [12, 20, 2, 40, 40, 1])
        [0, 20, 4, 40, 40, 1]
        """
        intervals = sorted(
            [(s[j], s[j + 1], s[j + 2]) for s in (a, b) for j in range(0, len(s), 3)]
        )
        out: list[int] = []
        for start, end, count in intervals:
            if out and start - out[-2] < self.gap_ms:
                out[-2] = max(out[-2], end)
                out[-1] += count
            else:
                out.extend((start, end, count))
        return out
