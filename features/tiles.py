"""Tiled event counts: a ring of per-tile counts behind sliding-window sums.

State is a flat JSON list ``[head, c_0, ..., c_{n-1}]``: ``head`` is the index
(``ts // tile_ms``) of the newest tile the ring has advanced to and tile ``i`` in
``(head - n, head]`` is counted in slot ``1 + i % n``. An empty ring is ``[]``.
Older tiles are zeroed as the ring advances, so the state never grows.
"""

from __future__ import annotations


class Tiled:
    """Shared shape of tile-based aggregators: ``n_tiles`` tiles of ``tile_ms`` each.

    >>> Tiled(5_000, 12)
    Tiled(tile_ms=5000, n_tiles=12)
    """

    __slots__ = ("n_tiles", "tile_ms")

    def __init__(self, tile_ms: int, n_tiles: int) -> None:
        if tile_ms <= 0 or n_tiles <= 0:
            raise ValueError(f"tile_ms and n_tiles must be > 0, got {tile_ms}, {n_tiles}")
        self.tile_ms = tile_ms
        self.n_tiles = n_tiles

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tile_ms={self.tile_ms}, n_tiles={self.n_tiles})"


class TileCounts(Tiled):
    """Mergeable per-tile event counts in a fixed ring of ``n_tiles`` slots.

    >>> agg = TileCounts(tile_ms=10, n_tiles=3)
    >>> s = agg.init()
    >>> for ts in (0, 5, 12, 29):
    ...     s = agg.update(s, ts, as_of_ms=ts)
    >>> s, agg.result(s, 29), agg.window_count(s, 29, 2), agg.result(s, 35)
    ([2, 2, 1, 1], 4, 2, 2)
    """

    __slots__ = ()

    def init(self) -> list[int]:
        """A new, empty ring.

        >>> TileCounts(10, 3).init()
        []
        """
        return []

    def update(self, state: list[int], ts_ms: int, as_of_ms: int, amount: int = 1) -> list[int]:
        """Count an event at ``ts_ms`` (mutating ``state``) as of ``as_of_ms >= ts_ms``.

        The ring first advances to the tile of ``as_of_ms``; an event whose tile has
        already left the ring is ignored.

        >>> agg = TileCounts(10, 3)
        >>> agg.update(agg.update([], 35, 35), 4, 35)   # tile 0 left when tile 3 began
        [3, 1, 0, 0]
        """
        tile = self.tile_ms
        n = self.n_tiles
        k = ts_ms // tile
        c = as_of_ms // tile
        if k > c:
            c = k
        if not state:
            state.append(c)
            state.extend([0] * n)
            head = c
        else:
            head = state[0]
            if c > head:
                if c - head >= n:
                    state[1:] = [0] * n
                else:
                    for i in range(head + 1, c + 1):
                        state[1 + i % n] = 0
                state[0] = head = c
        if k > head - n:
            state[1 + k % n] += amount
        return state

    def window_count(self, state: list[int], as_of_ms: int, n_tiles: int) -> int:
        """Events in the ``n_tiles`` tiles ending with the tile of ``as_of_ms``.

        >>> agg = TileCounts(10, 3)
        >>> s = agg.update(agg.update([], 10, 10), 21, 21)
        >>> agg.window_count(s, 21, 1), agg.window_count(s, 21, 3), agg.window_count([], 21, 3)
        (1, 2, 0)
        """
        if not state:
            return 0
        head = state[0]
        n = self.n_tiles
        moved = as_of_ms // self.tile_ms - head  # tiles the window has moved past head
        if moved >= n_tiles:
            return 0
        if moved >= 0 and n_tiles >= n:
            # whole ring minus the `moved` oldest tiles, which left the window
            total = sum(state) - head
            for i in range(head - n + 1, head - n + 1 + moved):
                total -= state[1 + i % n]
            return total
        lo = max(head + moved - n_tiles, head - n)
        total = 0
        for i in range(lo + 1, min(head + moved, head) + 1):
            total += state[1 + i % n]
        return total

    def result(self, state: list[int], as_of_ms: int) -> int:
        """Events in the whole ring's window as of ``as_of_ms``.

        >>> TileCounts(10, 3).result([2, 0, 1, 5], 20)
        6
        """
        return self.window_count(state, as_of_ms, self.n_tiles)

    def merge(self, a: list[int], b: list[int]) -> list[int]:
        """A new ring counting the events of both rings (advanced to the later head).

        >>> agg = TileCounts(10, 3)
        >>> agg.merge([2, 1, 1, 1], [4, 0, 7, 0])
        [4, 0, 7, 1]
        """
        if not a:
            return list(b)
        if not b:
            return list(a)
        n = self.n_tiles
        head = max(a[0], b[0])
        out = [head] + [0] * n
        for src in (a, b):
            src_head = src[0]
            for i in range(max(src_head, head) - n + 1, src_head + 1):
                out[1 + i % n] += src[1 + i % n]
        return out
