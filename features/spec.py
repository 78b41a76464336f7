"""Feature definitions: a :class:`FeatureSpec` names one feature and how it is computed.

A spec is declared once and executed by both the stream workers and the replay
runner. Its aggregation (:mod:`features.aggregation`) says which per-key state it
needs and how its value is read; the engine that runs them lives in
:mod:`features.engine`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from features.aggregation import (
    ALL_SOURCES,
    ANY_SOURCE,
    SESSION_GAP_MS,
    SOURCES,
    Aggregation,
    Count,
    DecayedCount,
    DistinctCount,
    SessionDuration,
    SessionEvents,
    SmoothedCtr,
    TimeSinceLast,
    TrendRatio,
    _positive_int,
)

__all__ = [
    "ALL_SOURCES", "ANY_SOURCE", "ENTITIES", "MAX_TILES", "MIN_TILES", "SESSION_GAP_MS",
    "SOURCES", "Aggregation", "Count", "DecayedCount", "DistinctCount", "FeatureSpec",
    "SessionDuration", "SessionEvents", "SmoothedCtr", "TimeSinceLast", "TrendRatio",
]

#: Entities a feature can be keyed by.
ENTITIES: Final = ("user", "item")
#: A window holds at least this many tiles (Chronon's sawtooth: tile <= window / 12).
MIN_TILES: Final = 12
#: A window holds at most this many tiles, so state per key stays small.
MAX_TILES: Final = 1440
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One feature: name, version, entity key, source topic, window and aggregation.

    ``tile_ms`` defaults to ``window_ms // 12``; it must divide the window and be at
    most a twelfth of it. Unwindowed aggregations take ``window_ms=None``.

    >>> s = FeatureSpec("clicks_5m", 1, "user", "clicks", 300_000, Count())
    >>> (s.state_key, s.tile_ms, s.n_tiles)
    ('clicks_5m@v1/300000', 25000, 12)
    >>> FeatureSpec("clicks_5m", 1, "user", "clicks", 300_000, Count(), tile_ms=60_000)
    Traceback (most recent call last):
    ...
    ValueError: FeatureSpec 'clicks_5m': tile_ms 60000 is more than window_ms / 12
    """

    name: str
    version: int
    entity: str
    source: str
    window_ms: int | None
    aggregation: Aggregation
    tile_ms: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"FeatureSpec name must match {_NAME.pattern}, got {self.name!r}"
            )
        where = f"FeatureSpec {self.name!r}"
        _positive_int(where, "version", self.version)
        if self.entity not in ENTITIES:
            raise ValueError(f"{where}: entity must be one of {ENTITIES}, got {self.entity!r}")
        if not isinstance(self.aggregation, Aggregation):
            raise ValueError(f"{where}: unknown aggregation {self.aggregation!r} "
                             "(aggregations subclass features.aggregation.Aggregation)")
        agg = self.aggregation
        if self.source not in agg.sources:
            raise ValueError(
                f"{where}: {type(agg).__name__} reads source {agg.sources}, got {self.source!r}"
            )
        if not agg.windowed:
            if self.window_ms is not None or self.tile_ms is not None:
                raise ValueError(f"{where}: {type(agg).__name__} takes no window or tile")
            return
        if self.window_ms is None:
            raise ValueError(f"{where}: {type(agg).__name__} needs a window_ms")
        window = _positive_int(where, "window_ms", self.window_ms)
        if self.tile_ms is None:
            if window % MIN_TILES:
                raise ValueError(
                    f"{where}: window_ms {window} is not a multiple of {MIN_TILES}; "
                    "give tile_ms explicitly"
                )
            object.__setattr__(self, "tile_ms", window // MIN_TILES)
        tile = _positive_int(where, "tile_ms", self.tile_ms)
        if window % tile:
            raise ValueError(f"{where}: tile_ms {tile} does not divide window_ms {window}")
        if window // tile < MIN_TILES:
            raise ValueError(f"{where}: tile_ms {tile} is more than window_ms / {MIN_TILES}")
        if window // tile > MAX_TILES:
            raise ValueError(f"{where}: window_ms / tile_ms is more than {MAX_TILES} tiles")

    @property
    def n_tiles(self) -> int | None:
        """Tiles per window (``window_ms // tile_ms``), None for unwindowed features.

        >>> FeatureSpec("t", 1, "user", "clicks", None, TimeSinceLast()).n_tiles is None
        True
        """
        if self.window_ms is None or self.tile_ms is None:
            return None
        return self.window_ms // self.tile_ms

    @property
    def state_key(self) -> str:
        """Stable key from name, version and window, e.g. ``clicks_5m@v1/300000``.

        >>> FeatureSpec("last_click", 2, "user", "clicks", None, TimeSinceLast()).state_key
        'last_click@v2'
        """
        base = f"{self.name}@v{self.version}"
        return base if self.window_ms is None else f"{base}/{self.window_ms}"

    @property
    def fingerprint(self) -> str:
        """The whole definition as one stable string (state_key, source, tile, aggregation).

        >>> FeatureSpec("c", 1, "item", "clicks", 60_000, Count()).fingerprint
        'c@v1/60000|item|clicks|5000|Count()'
        """
        return f"{self.state_key}|{self.entity}|{self.source}|{self.tile_ms}|{self.aggregation!r}"
