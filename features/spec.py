"""Feature definitions: a :class:`FeatureSpec` names one feature and how it is computed.

A spec is declared once and executed by both the stream workers and the replay
runner. The aggregation objects here are plain, validated data; the engine that
runs them lives in :mod:`features.featureset`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar, Final

from events.timing import DAY_MS, HOUR_MS, MINUTE_MS

#: Entities a feature can be keyed by.
ENTITIES: Final = ("user", "item")
#: The two input topics a feature can read.
SOURCES: Final = ("clicks", "predictions")
#: Pseudo-source: events of both input topics.
ANY_SOURCE: Final = "any"
ALL_SOURCES: Final = (*SOURCES, ANY_SOURCE)
#: A window holds at least this many tiles (Chronon's sawtooth: tile <= window / 12).
MIN_TILES: Final = 12
#: A window holds at most this many tiles, so state per key stays small.
MAX_TILES: Final = 1440
#: Default session gap: a session ends after 30 minutes without events.
SESSION_GAP_MS: Final = 30 * MINUTE_MS

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _positive_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Count:
    """Number of events in the sliding window.

    >>> Count()
    Count()
    """

    windowed: ClassVar[bool] = True
    sources: ClassVar[tuple[str, ...]] = ALL_SOURCES


@dataclass(frozen=True, slots=True)
class SmoothedCtr:
    """Smoothed click-through rate ``(clicks + a) / (impressions + a + b)`` over the window.

    >>> SmoothedCtr(1, 19)
    SmoothedCtr(prior_clicks=1.0, prior_non_clicks=19.0)
    >>> SmoothedCtr(0, 0)
    Traceback (most recent call last):
    ...
    ValueError: SmoothedCtr priors must sum to more than 0, got 0.0 + 0.0
    """

    prior_clicks: float = 1.0
    prior_non_clicks: float = 19.0

    windowed: ClassVar[bool] = True
    sources: ClassVar[tuple[str, ...]] = (ANY_SOURCE,)

    def __post_init__(self) -> None:
        for name in ("prior_clicks", "prior_non_clicks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"SmoothedCtr.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"SmoothedCtr.{name} must be finite and >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.prior_clicks + self.prior_non_clicks <= 0:
            raise ValueError(
                "SmoothedCtr priors must sum to more than 0, "
                f"got {self.prior_clicks} + {self.prior_non_clicks}"
            )


@dataclass(frozen=True, slots=True)
class TimeSinceLast:
    """Milliseconds from the last event to ``as_of_ts``; None if there was none.

    >>> TimeSinceLast()
    TimeSinceLast()
    """

    windowed: ClassVar[bool] = False
    sources: ClassVar[tuple[str, ...]] = ALL_SOURCES


@dataclass(frozen=True, slots=True)
class DistinctCount:
    """Exact number of distinct ``field`` values (item or user ids) in the window.

    >>> DistinctCount("item_id").field
    'item_id'
    """

    field: str = "item_id"

    windowed: ClassVar[bool] = True
    sources: ClassVar[tuple[str, ...]] = ALL_SOURCES

    def __post_init__(self) -> None:
        if self.field not in ("item_id", "user_id"):
            raise ValueError(
                f"DistinctCount.field must be 'item_id' or 'user_id', got {self.field!r}"
            )


@dataclass(frozen=True, slots=True)
class _SessionAggregation:
    """Shared parameters of the session aggregations."""

    gap_ms: int = SESSION_GAP_MS
    horizon_ms: int = HOUR_MS

    windowed: ClassVar[bool] = False
    sources: ClassVar[tuple[str, ...]] = ALL_SOURCES

    def __post_init__(self) -> None:
        kind = type(self).__name__
        _positive_int(kind, "gap_ms", self.gap_ms)
        _positive_int(kind, "horizon_ms", self.horizon_ms)


@dataclass(frozen=True, slots=True)
class SessionEvents(_SessionAggregation):
    """Number of events in the session that contains ``as_of_ts``.

    A session ends after ``gap_ms`` without events. Events more than ``horizon_ms``
    behind ``as_of_ts`` when they arrive are ignored (keep it >= the allowed lateness).

    >>> SessionEvents()
    SessionEvents(gap_ms=1800000, horizon_ms=3600000)
    """


@dataclass(frozen=True, slots=True)
class SessionDuration(_SessionAggregation):
    """Last minus first event time of the session that contains ``as_of_ts``.

    >>> SessionDuration(gap_ms=60_000).gap_ms
    60000
    """


@dataclass(frozen=True, slots=True)
class DecayedCount:
    """Sum over events of ``2 ** (-(as_of_ts - ts) / half_life_ms)``.

    >>> DecayedCount(600_000)
    DecayedCount(half_life_ms=600000)
    >>> DecayedCount(0)
    Traceback (most recent call last):
    ...
    ValueError: DecayedCount.half_life_ms must be a positive integer, got 0
    """

    half_life_ms: int

    windowed: ClassVar[bool] = False
    sources: ClassVar[tuple[str, ...]] = ALL_SOURCES

    def __post_init__(self) -> None:
        _positive_int("DecayedCount", "half_life_ms", self.half_life_ms)


@dataclass(frozen=True, slots=True)
class TrendRatio:
    """Short over long decayed event rate (rate = decayed count * ln 2 / half-life).

    >>> TrendRatio()
    TrendRatio(short_half_life_ms=900000, long_half_life_ms=86400000)
    """

    short_half_life_ms: int = 15 * MINUTE_MS
    long_half_life_ms: int = DAY_MS

    windowed: ClassVar[bool] = False
    sources: ClassVar[tuple[str, ...]] = ALL_SOURCES

    def __post_init__(self) -> None:
        _positive_int("TrendRatio", "short_half_life_ms", self.short_half_life_ms)
        _positive_int("TrendRatio", "long_half_life_ms", self.long_half_life_ms)
        if self.short_half_life_ms >= self.long_half_life_ms:
            raise ValueError(
                "TrendRatio.short_half_life_ms must be less than long_half_life_ms, got "
                f"{self.short_half_life_ms} >= {self.long_half_life_ms}"
            )


#: Any aggregation a :class:`FeatureSpec` may use.
Aggregation = (
    Count
    | SmoothedCtr
    | TimeSinceLast
    | DistinctCount
    | SessionEvents
    | SessionDuration
    | DecayedCount
    | TrendRatio
)
_AGGREGATIONS: Final = (
    Count, SmoothedCtr, TimeSinceLast, DistinctCount,
    SessionEvents, SessionDuration, DecayedCount, TrendRatio,
)


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
        if not isinstance(self.aggregation, _AGGREGATIONS):
            raise ValueError(f"{where}: unknown aggregation {self.aggregation!r}")
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
