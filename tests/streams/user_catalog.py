"""A user's own feature catalog, as it would live in their repository (not freshet's).

The broker test copies this file into a folder of its own, puts that folder on the
worker's PYTHONPATH and starts the worker with ``FRESHET_CATALOG=acme_features:catalog``.
It declares a store freshet does not have (the first event time of a key) and two
aggregations of its own on top of freshet's stores and its own store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from features.aggregation import Aggregation, Count, Values
from features.batch import NONE, EntityEvents, segmented_max
from features.catalog import Catalog
from features.featureset import FeatureSet
from features.spec import FeatureSpec
from features.store import Block, Reading, Store
from features.stores import TileReading, TileStore

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class FirstReading(Reading):
    """The first event time at each read position (NONE: none yet)."""

    first: I64


@dataclass(frozen=True, slots=True)
class FirstSeenStore(Store):
    """The earliest event time of ``source`` a key has seen."""

    source: str
    dtype: ClassVar[type[np.generic] | None] = np.int64

    def width(self) -> int:
        return 1

    def empty(self) -> Any:
        return np.full(1, NONE, dtype=np.int64)

    def apply(self, block: Block, ev: EntityEvents) -> FirstReading:
        if not isinstance(block, np.ndarray):
            raise TypeError("FirstSeenStore keeps a numpy block")
        src = ev.mask(self.source)
        old = block[ev.keys, 0]
        if src.any():
            top = int(ev.ts[src].max())
            # a running min is a running max of the negated times
            running = segmented_max(np.where(src, top - ev.ts + 1, 0), ev.group, ev.starts)
            first = np.where(running > 0, top + 1 - running, NONE)
            old_g = old[ev.group]
            first = np.where(old_g == NONE, first,
                             np.where(first == NONE, old_g, np.minimum(first, old_g)))
        else:
            first = old[ev.group]
        block[ev.keys, 0] = first[ev.starts[1:] - 1]
        return FirstReading(first[ev.qpos])

    def read(self, block: Block, rows: I64, as_of: I64) -> FirstReading:
        if not isinstance(block, np.ndarray):
            raise TypeError("FirstSeenStore keeps a numpy block")
        return FirstReading(block[rows, 0].copy())

    def merge(self, a: Any, a_as_of: int, b: Any, b_as_of: int) -> Any:
        x, y = int(np.asarray(a)[0]), int(np.asarray(b)[0])
        return np.array([y if x == NONE else x if y == NONE else min(x, y)], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class AgeMs(Aggregation):
    """Milliseconds from a key's first event to its as-of time."""

    nullable: ClassVar[bool] = True

    def stores(self, spec: FeatureSpec) -> tuple[Store, ...]:
        return (FirstSeenStore(spec.source),)

    def read(self, spec: FeatureSpec, readings: Sequence[Reading], as_of: I64) -> Values:
        reading = readings[0]
        if not isinstance(reading, FirstReading):
            raise TypeError("AgeMs reads a FirstSeenStore")
        null = reading.first == NONE
        return Values(np.where(null, 0, as_of - np.where(null, 0, reading.first)), null)

    @classmethod
    def examples(cls) -> list[FeatureSpec]:
        return [FeatureSpec("age_ms", 1, "user", "any", None, cls())]


@dataclass(frozen=True, slots=True)
class ClickShare(Aggregation):
    """Clicks over all events in the window (no prior; 0.0 when the window is empty)."""

    windowed: ClassVar[bool] = True
    sources: ClassVar[tuple[str, ...]] = ("any",)
    value_type: ClassVar[Literal["int", "float"]] = "float"

    def stores(self, spec: FeatureSpec) -> tuple[Store, ...]:
        tile, n = spec.tile_ms or 0, spec.n_tiles or 0
        return (TileStore("clicks", tile, n), TileStore("predictions", tile, n))

    def read(self, spec: FeatureSpec, readings: Sequence[Reading], as_of: I64) -> Values:
        n = spec.n_tiles or 0
        clicks, imps = (r.window(n) for r in readings if isinstance(r, TileReading))
        total = clicks + imps
        return Values(np.where(total > 0, clicks / np.maximum(total, 1), 0.0))

    @classmethod
    def examples(cls) -> list[FeatureSpec]:
        return [FeatureSpec("click_share_1h", 1, "user", "any", 3_600_000, cls())]


def catalog() -> Catalog:
    """The user's catalog: one freshet aggregation, two of their own."""
    user = FeatureSet("user", [
        FeatureSpec("clicks_10m", 1, "user", "clicks", 600_000, Count()),
        FeatureSpec("click_share_1h", 1, "user", "any", 3_600_000, ClickShare()),
        FeatureSpec("age_ms", 1, "user", "any", None, AgeMs()),
    ])
    item = FeatureSet("item", [
        FeatureSpec("impressions_10m", 1, "item", "predictions", 600_000, Count()),
    ])
    return Catalog(user=user, item=item)


def broken() -> Catalog:
    """A catalog with a bad feature (its window is not a multiple of 12 tiles)."""
    bad = FeatureSpec("clicks_7ms", 1, "user", "clicks", 7, Count())
    return Catalog(user=FeatureSet("user", [bad]), item=FeatureSet("item", []))
