"""The open aggregation interface and the built-in aggregations.

An :class:`Aggregation` is how one feature's value is computed. It declares the
per-key state it needs as :class:`~features.store.Store` s (layout, vectorized
update, merge), and reads its value from their readings, vectorized over many read
positions at once. Declarations are frozen dataclasses validated in
``__post_init__``; every concrete subclass is listed by :func:`registered`
(``examples()`` gives the specs the contract tests run it with), so a user's own
aggregation, defined in their own package, is executed and tested like the
built-ins::

    @dataclass(frozen=True)
    class MaxWindowedCount(Aggregation):
        windowed = True
        sources = ("clicks", "predictions", "any")
        def stores(self, spec): return (TileStore(spec.source, spec.tile_ms, spec.n_tiles),)
        def read(self, spec, readings, as_of): ...
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import numpy as np
import numpy.typing as npt

from events.timing import DAY_MS, HOUR_MS, MINUTE_MS
from features.batch import NONE
from features.store import Reading, Store
from features.stores import (
    DecayReading,
    DecayStore,
    DistinctReading,
    DistinctStore,
    LastReading,
    LastStore,
    SessionReading,
    SessionStore,
    TileReading,
    TileStore,
)

if TYPE_CHECKING:
    from features.spec import FeatureSpec

#: The two input topics a feature can read, and the pseudo-source for both.
SOURCES: Final = ("clicks", "predictions")
ANY_SOURCE: Final = "any"
ALL_SOURCES: Final = (*SOURCES, ANY_SOURCE)
#: Default session gap: a session ends after 30 minutes without events.
SESSION_GAP_MS: Final = 30 * MINUTE_MS

_SUBCLASSES: dict[str, type[Aggregation]] = {}


def registered() -> dict[str, type[Aggregation]]:
    """Every concrete aggregation class defined so far (built-in and user-defined).

    >>> [n for n in registered() if n.startswith("features.")][:3]
    ['features.aggregation.Count', 'features.aggregation.DecayedCount', \
'features.aggregation.DistinctCount']
    """
    return {name: cls for name, cls in sorted(_SUBCLASSES.items())
            if not inspect.isabstract(cls) and not cls.__name__.startswith("_")}

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Values:
    """One feature's values at a set of read positions; ``null`` marks JSON nulls.

    >>> Values(np.array([3, 0]), np.array([False, True])).to_list()
    [3, None]
    """

    values: I64 | F64
    null: npt.NDArray[np.bool_] | None = None

    def to_list(self) -> list[int | float | None]:
        """The values as Python numbers (None where null)."""
        out: list[int | float | None] = self.values.tolist()
        if self.null is not None:
            for i in np.flatnonzero(self.null).tolist():
                out[i] = None
        return out


def _positive_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")
    return value


def _tiling(spec: FeatureSpec) -> tuple[int, int]:
    if spec.tile_ms is None or spec.n_tiles is None:
        raise ValueError(f"feature {spec.name!r} has no window")
    return spec.tile_ms, spec.n_tiles


def _as(reading: Reading, kind: type[Any]) -> Any:
    if not isinstance(reading, kind):
        raise TypeError(f"expected a {kind.__name__}, got {type(reading).__name__}")
    return reading


class Aggregation(ABC):
    """How a feature's value is computed: its stores and a vectorized read.

    >>> Count().value_type, TimeSinceLast().nullable
    ('int', True)
    """

    #: whether the feature takes a window (``window_ms`` / ``tile_ms``)
    windowed: ClassVar[bool] = False
    #: which ``FeatureSpec.source`` values it accepts
    sources: ClassVar[tuple[str, ...]] = ALL_SOURCES
    #: the JSON type of its values, and whether they can be null
    value_type: ClassVar[Literal["int", "float"]] = "int"
    nullable: ClassVar[bool] = False
    #: event fields its stores need besides time and source (e.g. "item_id")
    fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # keyed by qualified name: dataclass(slots=True) re-creates the class
        _SUBCLASSES[f"{cls.__module__}.{cls.__qualname__}"] = cls

    def needs_fields(self) -> tuple[str, ...]:
        """The event fields this declaration's stores read (default: ``fields``)."""
        return self.fields

    @abstractmethod
    def stores(self, spec: FeatureSpec) -> tuple[Store, ...]:
        """The stores this feature reads (equal share keys are shared between features)."""

    @abstractmethod
    def read(self, spec: FeatureSpec, readings: Sequence[Reading], as_of: I64) -> Values:
        """The values at the read positions, from the readings of :meth:`stores`."""

    @classmethod
    def examples(cls) -> list[FeatureSpec]:
        """Specs the contract tests run this aggregation with (override in subclasses)."""
        return []


def _spec(name: str, source: str, window_ms: int | None, agg: Aggregation,
          entity: str = "user") -> FeatureSpec:
    from features.spec import FeatureSpec

    return FeatureSpec(name, 1, entity, source, window_ms, agg)


@dataclass(frozen=True, slots=True)
class Count(Aggregation):
    """Number of events in the sliding window.

    >>> Count()
    Count()
    """

    windowed: ClassVar[bool] = True

    def stores(self, spec: FeatureSpec) -> tuple[Store, ...]:
        tile, n = _tiling(spec)
        return (TileStore(spec.source, tile, n),)

    def read(self, spec: FeatureSpec, readings: Sequence[Reading], as_of: I64) -> Values:
        return Values(_as(readings[0], TileReading).window(_tiling(spec)[1]))

    @classmethod
    def examples(cls) -> list[FeatureSpec]:
        return [_spec("clicks_1m", "clicks", MINUTE_MS, cls()),
                _spec("events_5m", "any", 5 * MINUTE_MS, cls())]


@dataclass(frozen=True, slots=True)
class SmoothedCtr(Aggregation):
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
    value_type: ClassVar[Literal["int", "float"]] = "float"

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

    def stores(self, spec: FeatureSpec) -> tuple[Store, ...]:
        tile, n = _tiling(spec)
        return (TileStore("clicks", tile, n), TileStore("predictions", tile, n))

    def read(self, spec: FeatureSpec, readings: Sequence[Reading], as_of: I64) -> Values:
        n = _tiling(spec)[1]
        clicks = _as(readings[0], TileReading).window(n)
        imps = _as(readings[1], TileReading).window(n)
        a, ab = self.prior_clicks, self.prior_clicks + self.prior_non_clicks
        return Values((clicks + a) / (imps + ab))

    @classmethod
    def examples(cls) -> list[FeatureSpec]:
        return [_spec("ctr_1h", "any", HOUR_MS, cls(1, 19))]


@dataclass(frozen=True, slots=True)
class TimeSinceLast(Aggregation):
    """Milliseconds from the last event to ``as_of_ts``; None if there was none.

    >>> TimeSinceLast()
    TimeSinceLast()
    """

    nullable: ClassVar[bool] = True

    def stores(self, spec: FeatureSpec) -> tuple[Store, ...]:
        return (LastStore(spec.source),)

    def read(self, spec: FeatureSpec, readings: Sequence[Reading], as_of: I64) -> Values:
        last = _as(readings[0], LastReading).last
        null = last == NONE
        return Values(np.where(null, 0, as_of - np.where(null, 0, last)), null)

    @classmethod
    def examples(cls) -> list[FeatureSpec]:
        return [_spec("ms_since_last_click", "clicks", None, cls())]


@dataclass(frozen=True, slots=True)
class DistinctCount(Aggregation):
    """Exact number of distinct ``field`` values (item or user ids) in the window.

    >>> DistinctCount("item_id").field
    'item_id'
    """

    field: str = "item_id"

    windowed: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.field not in ("item_id", "user_id"):
            raise ValueError(
                f"DistinctCount.field must be 'item_id' or 'user_id', got {self.field!r}"
            )

    def needs_fields(self) -> tuple[str, ...]:
        return (self.field,)

    def stores(self, spec: FeatureSpec) -> tuple[Store, ...]:
        tile, n = _tiling(spec)
        return (DistinctStore(spec.source, self.field, tile, n),)

    def read(self, spec: FeatureSpec, readings: Sequence[Reading], as_of: I64) -> Values:
        return Values(_as(readings[0], DistinctReading).counts)

    @classmethod
    def examples(cls) -> list[FeatureSpec]:
        return [_spec("distinct_items_1h", "clicks", HOUR_MS, cls("item_id"))]


@dataclass(frozen=True, slots=True)
class _SessionAggregation(Aggregation):
    """Shared parameters of the session aggregations."""

    gap_ms: int = SESSION_GAP_MS
    horizon_ms: int = HOUR_MS

    def __post_init__(self) -> None:
        kind = type(self).__name__
        _positive_int(kind, "gap_ms", self.gap_ms)
        _positive_int(kind, "horizon_ms", self.horizon_ms)

    def stores(self, spec: FeatureSpec) -> tuple[Store, ...]:
        return (SessionStore(spec.source, self.gap_ms, self.horizon_ms),)


@dataclass(frozen=True, slots=True)
class SessionEvents(_SessionAggregation):
    """Number of events in the session that contains ``as_of``.

    A session ends after ``gap_ms`` without events. Events more than ``horizon_ms``
    behind ``as_of`` when they arrive are ignored (keep it >= the allowed lateness).

    >>> SessionEvents()
    SessionEvents(gap_ms=1800000, horizon_ms=3600000)
    """

    def read(self, spec: FeatureSpec, readings: Sequence[Reading], as_of: I64) -> Values:
        return Values(_as(readings[0], SessionReading).count)

    @classmethod
    def examples(cls) -> list[FeatureSpec]:
        return [_spec("session_events", "any", None, cls(gap_ms=60_000))]


@dataclass(frozen=True, slots=True)
class SessionDuration(_SessionAggregation):
    """Last minus first event time of the session that contains ``as_of``.

    >>> SessionDuration(gap_ms=60_000).gap_ms
    60000
    """

    nullable: ClassVar[bool] = True

    def read(self, spec: FeatureSpec, readings: Sequence[Reading], as_of: I64) -> Values:
        duration = _as(readings[0], SessionReading).duration
        null = duration == NONE
        return Values(np.where(null, 0, duration), null)

    @classmethod
    def examples(cls) -> list[FeatureSpec]:
        return [_spec("session_duration_ms", "any", None, cls(gap_ms=60_000))]


@dataclass(frozen=True, slots=True)
class DecayedCount(Aggregation):
    """Sum over events of ``2 ** (-(as_of_ts - ts) / half_life_ms)``.

    >>> DecayedCount(600_000)
    DecayedCount(half_life_ms=600000)
    >>> DecayedCount(0)
    Traceback (most recent call last):
    ...
    ValueError: DecayedCount.half_life_ms must be a positive integer, got 0
    """

    half_life_ms: int

    value_type: ClassVar[Literal["int", "float"]] = "float"

    def __post_init__(self) -> None:
        _positive_int("DecayedCount", "half_life_ms", self.half_life_ms)

    def stores(self, spec: FeatureSpec) -> tuple[Store, ...]:
        return (DecayStore(spec.source, self.half_life_ms),)

    def read(self, spec: FeatureSpec, readings: Sequence[Reading], as_of: I64) -> Values:
        return Values(_as(readings[0], DecayReading).at(as_of))

    @classmethod
    def examples(cls) -> list[FeatureSpec]:
        return [_spec("clicks_decayed_10m", "clicks", None, cls(10 * MINUTE_MS))]


@dataclass(frozen=True, slots=True)
class TrendRatio(Aggregation):
    """Short over long decayed event rate (rate = decayed count * ln 2 / half-life).

    >>> TrendRatio()
    TrendRatio(short_half_life_ms=900000, long_half_life_ms=86400000)
    """

    short_half_life_ms: int = 15 * MINUTE_MS
    long_half_life_ms: int = DAY_MS

    value_type: ClassVar[Literal["int", "float"]] = "float"
    nullable: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _positive_int("TrendRatio", "short_half_life_ms", self.short_half_life_ms)
        _positive_int("TrendRatio", "long_half_life_ms", self.long_half_life_ms)
        if self.short_half_life_ms >= self.long_half_life_ms:
            raise ValueError(
                "TrendRatio.short_half_life_ms must be less than long_half_life_ms, got "
                f"{self.short_half_life_ms} >= {self.long_half_life_ms}"
            )

    def stores(self, spec: FeatureSpec) -> tuple[Store, ...]:
        return (DecayStore(spec.source, self.short_half_life_ms),
                DecayStore(spec.source, self.long_half_life_ms))

    def read(self, spec: FeatureSpec, readings: Sequence[Reading], as_of: I64) -> Values:
        short = _as(readings[0], DecayReading).at(as_of)
        long = _as(readings[1], DecayReading).at(as_of)
        null = long == 0.0
        scale = self.long_half_life_ms / self.short_half_life_ms  # rate ratio needs no ln 2
        return Values(np.where(null, 0.0, short / np.where(null, 1.0, long) * scale), null)

    @classmethod
    def examples(cls) -> list[FeatureSpec]:
        return [_spec("trend_ratio", "clicks", None, cls(15 * MINUTE_MS, DAY_MS), "item")]
