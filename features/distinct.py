"""Exact distinct counts over a tiled window: each value keeps its newest tile.

State is a JSON object ``{value: tile_index}`` (``tile_index = ts // tile_ms`` of the
value's newest event). Values whose tile left the ring of ``n_tiles`` tiles before
the current ``as_of`` are evicted, so the state holds at most the values seen in
the window.
"""

from __future__ import annotations

from features.tiles import Tiled


class DistinctLast(Tiled):
    """Mergeable exact distinct count of string values in a sliding tiled window.

    >>> agg = DistinctLast(tile_ms=10, n_tiles=3)
    >>> s = agg.init()
    >>> for item, ts in [("a", 0), ("b", 12), ("a", 25), ("c", 31)]:
    ...     s = agg.update(s, item, ts, ts)
    >>> s, agg.result(s, 31), agg.window_count(s, 31, 1)
    ({'a': 2, 'b': 1, 'c': 3}, 3, 1)
    """

    __slots__ = ()

    def init(self) -> dict[str, int]:
        """No value seen yet.

        >>> DistinctLast(10, 3).init()
        {}
        """
        return {}

    def update(
        self, state: dict[str, int], value: str, ts_ms: int, as_of_ms: int
    ) -> dict[str, int]:
        """Record ``value`` seen at ``ts_ms`` (mutating ``state``); a new value evicts expired ones.

        >>> DistinctLast(10, 3).update({"a": 0}, "b", 30, 30)
        {'b': 3}
        """
        tile = self.tile_ms
        k = ts_ms // tile
        c = as_of_ms // tile
        if k > c:
            c = k
        lo = c - self.n_tiles
        if k <= lo:
            return state
        old = state.get(value)
        if old is not None:
            if k > old:
                state[value] = k
            return state
        # Only a new value grows the state: evict expired values then.
        expired = [key for key, kept in state.items() if kept <= lo]
        for key in expired:
            del state[key]
        state[value] = k
        return state

    def window_count(self, state: dict[str, int], as_of_ms: int, n_tiles: int) -> int:
        """Distinct values seen in the ``n_tiles`` tiles ending with the tile of ``as_of_ms``.

        >>> DistinctLast(10, 3).window_count({"a": 0, "b": 2}, 25, 2)
        1
        """
        lo = as_of_ms // self.tile_ms - n_tiles
        c = 0
        for k in state.values():
            if k > lo:
                c += 1
        return c

    def result(self, state: dict[str, int], as_of_ms: int) -> int:
        """Distinct values in the whole ring's window as of ``as_of_ms``.

        >>> DistinctLast(10, 3).result({"a": 0, "b": 2}, 25)
        2
        """
        return self.window_count(state, as_of_ms, self.n_tiles)

    def merge(self, a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        """A new state with every value at its newest tile in either state.

        >>> DistinctLast(10, 3).merge({"a": 1, "b": 4}, {"a": 3})
        {'a': 3, 'b': 4}
        """
        out = dict(a)
        for key, k in b.items():
            old = out.get(key)
            if old is None or k > old:
                out[key] = k
        return out
