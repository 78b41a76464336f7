"""Last event time: the state is the max event ts seen (an int), or None."""

from __future__ import annotations


class LastSeen:
    """Mergeable max event time, read as milliseconds since that event.

    >>> agg = LastSeen()
    >>> s = agg.update(agg.update(agg.init(), 30, 30), 10, 30)
    >>> s, agg.result(s, 45), agg.result(agg.init(), 45)
    (30, 15, None)
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "LastSeen()"

    def init(self) -> int | None:
        """No event yet.

        >>> LastSeen().init() is None
        True
        """
        return None

    def update(self, state: int | None, ts_ms: int, as_of_ms: int) -> int | None:
        """The later of ``state`` and ``ts_ms`` (``as_of_ms`` is not needed).

        >>> LastSeen().update(5, 3, 9)
        5
        """
        return ts_ms if state is None or ts_ms > state else state

    def merge(self, a: int | None, b: int | None) -> int | None:
        """The later of two last-event times.

        >>> LastSeen().merge(None, 4), LastSeen().merge(7, 4)
        (4, 7)
        """
        if a is None:
            return b
        if b is None:
            return a
        return max(a, b)

    def result(self, state: int | None, as_of_ms: int) -> int | None:
        """``as_of_ms - last`` event time, None if there was no event.

        >>> LastSeen().result(100, 160)
        60
        """
        return None if state is None else as_of_ms - state
