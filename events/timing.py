"""Time primitives: integer milliseconds, half-open windows, monotonic watermarks.

Pure code never reads the clock: every function here takes time as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A watermark at "+infinity": the end of a replayed input.
END_OF_TIME_MS = 2**62

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


def tile_start(ts_ms: int, tile_ms: int) -> int:
    """Start of the half-open tile ``[start, start + tile_ms)`` that holds ``ts_ms``.

    >>> tile_start(61_000, 25_000)
    50000
    >>> tile_start(50_000, 25_000)
    50000
    """
    return ts_ms - ts_ms % tile_ms


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open event-time interval ``[start_ms, end_ms)``.

    >>> w = Window(0, 10)
    >>> (w.contains(0), w.contains(9), w.contains(10), w.length_ms)
    (True, True, False, 10)
    """

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms < self.start_ms:
            raise ValueError(f"window end {self.end_ms} is before its start {self.start_ms}")

    @property
    def length_ms(self) -> int:
        """The window's length in milliseconds."""
        return self.end_ms - self.start_ms

    def contains(self, ts_ms: int) -> bool:
        """True when ``start_ms <= ts_ms < end_ms``."""
        return self.start_ms <= ts_ms < self.end_ms


class InputWatermark:
    """The watermark of one partition fed by several input topics: the minimum of theirs.

    Each source keeps its own max event time; the partition's watermark is the
    smallest of them minus the allowed lateness, so a topic that is read ahead of
    another cannot make the other's events late. It never goes backwards; an idle or
    finished input is moved forward with :meth:`advance_to`.

    >>> wm = InputWatermark(("clicks", "predictions"), allowed_lateness_ms=1_000)
    >>> wm.observe("predictions", 50_000) is None   # clicks not seen yet
    True
    >>> wm.observe("clicks", 20_000)
    19000
    >>> wm.is_late(18_999), wm.is_late(19_000)
    (True, False)
    >>> wm.advance_to(60_000)
    60000
    """

    __slots__ = ("allowed_lateness_ms", "max_event_ms", "value_ms")

    def __init__(self, sources: tuple[str, ...], allowed_lateness_ms: int) -> None:
        if not sources:
            raise ValueError("an input watermark needs at least one source")
        if allowed_lateness_ms < 0:
            raise ValueError(f"allowed lateness must be >= 0 ms, got {allowed_lateness_ms}")
        self.allowed_lateness_ms = allowed_lateness_ms
        self.max_event_ms: dict[str, int | None] = dict.fromkeys(sources)
        self.value_ms: int | None = None

    def observe(self, source: str, ts_ms: int) -> int | None:
        """Account for an event of ``source`` at ``ts_ms``; return the watermark."""
        seen = self.max_event_ms[source]
        if seen is None or ts_ms > seen:
            self.max_event_ms[source] = ts_ms
            maxima = self.max_event_ms.values()
            if None not in maxima:
                low = min(m for m in maxima if m is not None) - self.allowed_lateness_ms
                if self.value_ms is None or low > self.value_ms:
                    self.value_ms = low
        return self.value_ms

    def advance_to(self, ts_ms: int) -> int:
        """Raise the watermark to ``ts_ms`` (idle time, end of input) if that is later."""
        if self.value_ms is None or ts_ms > self.value_ms:
            self.value_ms = ts_ms
        return self.value_ms

    def is_late(self, ts_ms: int) -> bool:
        """True when an event at ``ts_ms`` is behind the watermark."""
        return self.value_ms is not None and ts_ms < self.value_ms
