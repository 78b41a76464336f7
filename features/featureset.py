"""FeatureSet: every feature of one entity, run over one JSON state per entity key.

State layout (plain JSON, stored with orjson)::

    {"as_of_ts": int | None, "stores": [store_0, store_1, ...]}

``stores`` holds one aggregator state per shared :class:`~features.plan.StoreKey`,
in a fixed order derived from the specs. The layout is identified by
:attr:`FeatureSet.state_name`, which changes whenever any definition changes, so a
changed definition never resumes stale state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Final

from events.contracts import SCHEMA_VERSION, Click, Prediction
from features.distinct import DistinctLast
from features.plan import (
    Aggregator,
    Reader,
    StoreKey,
    WindowRead,
    agg_field,
    applies_to,
    make_aggregator,
    make_reader,
    needs,
    window_reads,
)
from features.sessions import Sessions
from features.spec import ENTITIES, SOURCES, Count, FeatureSpec
from features.tiles import TileCounts

#: Bumped when the engine's state layout changes; part of every state_name.
STATE_LAYOUT_VERSION: Final = 1

_Update = Callable[[Any, int, int], Any]
# (store index, update, horizon_ms for stores that bound arrivals by a horizon, else None)
_PlainUpdate = tuple[int, _Update, int | None]
_KeyedUpdate = Callable[[Any, str, int, int], Any]
_WindowCount = Callable[[list[int], int, int], int]


class FeatureSet:
    """The features of one entity ("user" or "item"), computed over one state per key.

    >>> from features.spec import Count
    >>> fs = FeatureSet("user", [FeatureSpec("clicks_5m", 1, "user", "clicks", 300_000, Count())])
    >>> state = fs.new_state()
    >>> fs.update(state, "clicks", Click("u1", "i1", 1_700_000_000_000))
    >>> fs.record(fs.key_of("clicks", Click("u1", "i1", 0)), state)["features"]
    {'clicks_5m': 1}
    """

    def __init__(self, entity: str, specs: Sequence[FeatureSpec]) -> None:
        if entity not in ENTITIES:
            raise ValueError(f"entity must be one of {ENTITIES}, got {entity!r}")
        self.entity = entity
        self.specs: tuple[FeatureSpec, ...] = tuple(specs)
        names: set[str] = set()
        for spec in self.specs:
            if not isinstance(spec, FeatureSpec):
                raise ValueError(f"expected a FeatureSpec, got {spec!r}")
            if spec.entity != entity:
                raise ValueError(
                    f"feature {spec.name!r} is for entity {spec.entity!r}, not {entity!r}"
                )
            if spec.name in names:
                raise ValueError(f"feature name {spec.name!r} is declared twice")
            names.add(spec.name)
        self._key_field = "user_id" if entity == "user" else "item_id"

        sizes: dict[StoreKey, int] = {}
        for spec in self.specs:
            for key, size in needs(spec):
                sizes[key] = max(size, sizes.get(key, 0))
        self.store_keys: tuple[StoreKey, ...] = tuple(sizes)
        self._aggregators: tuple[Aggregator, ...] = tuple(
            make_aggregator(key, sizes[key]) for key in self.store_keys
        )
        stores = {key: (i, agg) for i, (key, agg) in enumerate(self._pairs())}
        windows: dict[WindowRead, int] = {}
        for spec in self.specs:
            for read in window_reads(spec):
                windows.setdefault(read, len(windows))
        self._windows = self._plan_windows(windows, stores)
        # (name, index of its window sum or -1, reader): counts are read straight from sums
        self._features: tuple[tuple[str, int, Reader], ...] = tuple(
            (
                spec.name,
                windows[window_reads(spec)[0]] if isinstance(spec.aggregation, Count) else -1,
                make_reader(spec, stores, windows),
            )
            for spec in self.specs
        )
        self._plain = {source: self._plan_updates(source)[0] for source in SOURCES}
        self._keyed = {source: self._plan_updates(source)[1] for source in SOURCES}
        self._empty = self._values(self._init_stores(), 0)
        digest = hashlib.sha1(self._definition().encode(), usedforsecurity=False).hexdigest()
        self._state_name = f"{entity}-features-{digest[:8]}"

    def _pairs(self) -> list[tuple[StoreKey, Aggregator]]:
        return list(zip(self.store_keys, self._aggregators, strict=True))

    @staticmethod
    def _plan_windows(
        windows: dict[WindowRead, int], stores: dict[StoreKey, tuple[int, Aggregator]]
    ) -> tuple[tuple[int, int, int, int, _WindowCount], ...]:
        # (store index, tile_ms, ring slots, window tiles, fallback) per shared window sum
        planned = []
        for read in windows:
            i, tiles = stores[read.store]
            if not isinstance(tiles, TileCounts):
                raise ValueError(f"window sum {read} does not read a tiles store")
            planned.append((i, tiles.tile_ms, tiles.n_tiles, read.n_tiles, tiles.window_count))
        return tuple(planned)

    def _plan_updates(
        self, source: str
    ) -> tuple[tuple[_PlainUpdate, ...], tuple[tuple[int, _KeyedUpdate, str], ...]]:
        # The stores an event of `source` updates: by time only, or by time and a field.
        plain: list[_PlainUpdate] = []
        keyed: list[tuple[int, _KeyedUpdate, str]] = []
        for i, (key, agg) in enumerate(self._pairs()):
            if not applies_to(key.source, source):
                continue
            if isinstance(agg, DistinctLast):
                keyed.append((i, agg.update, agg_field(key)))
            else:
                horizon = agg.horizon_ms if isinstance(agg, Sessions) else None
                plain.append((i, agg.update, horizon))
        return tuple(plain), tuple(keyed)

    def __repr__(self) -> str:
        return f"FeatureSet({self.entity!r}, {[s.name for s in self.specs]!r})"

    def _definition(self) -> str:
        lines = [f"layout={STATE_LAYOUT_VERSION}", f"entity={self.entity}"]
        lines += [spec.fingerprint for spec in self.specs]
        return "\n".join(lines)

    def _init_stores(self) -> list[Any]:
        return [agg.init() for agg in self._aggregators]

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names, in declaration order.

        >>> FeatureSet("item", []).names
        ()
        """
        return tuple(name for name, _, _ in self._features)

    @property
    def state_name(self) -> str:
        """Stable short name of this set's state, e.g. ``user-features-1a2b3c4d``.

        >>> FeatureSet("item", []).state_name.startswith("item-features-")
        True
        """
        return self._state_name

    def key_of(self, source: str, event: Prediction | Click) -> str:
        """The entity key of an event: its user_id for users, its item_id for items.

        >>> FeatureSet("item", []).key_of("clicks", Click("u1", "i9", 0))
        'i9'
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        key: str = getattr(event, self._key_field)
        return key

    def new_state(self) -> dict[str, Any]:
        """A fresh, JSON-serializable state for one entity key.

        >>> FeatureSet("item", []).new_state()
        {'as_of_ts': None, 'stores': []}
        """
        return {"as_of_ts": None, "stores": self._init_stores()}

    def update(self, state: dict[str, Any], source: str, event: Prediction | Click,
               watermark_ms: int | None = None) -> None:
        """Apply one event of ``source`` to ``state`` in place; as_of_ts = max(as_of_ts, ts).

        ``watermark_ms``, when the caller has one, promises that no event older than it
        will arrive. Sessions then keep every session an arrival could still join
        (those ending after ``watermark_ms - gap_ms``) however far ``as_of_ts`` runs
        ahead, instead of assuming arrivals at most ``horizon_ms`` behind ``as_of_ts``.

        >>> fs = FeatureSet("item", [])
        >>> s = fs.new_state()
        >>> fs.update(s, "predictions", Prediction("p", "r", "u", "i", "m", 0.5, 7))
        >>> fs.update(s, "clicks", Click("u", "i", 5))
        >>> s["as_of_ts"]
        7
        """
        plain = self._plain.get(source)
        if plain is None:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        ts = event.ts
        t = state["as_of_ts"]
        if t is None or ts > t:
            state["as_of_ts"] = t = ts
        stores = state["stores"]
        for i, upd, horizon in plain:
            if horizon is None or watermark_ms is None:
                stores[i] = upd(stores[i], ts, t)
            else:
                stores[i] = upd(stores[i], ts, min(t, watermark_ms + horizon))
        for i, kupd, field in self._keyed[source]:
            stores[i] = kupd(stores[i], getattr(event, field), ts, t)

    def values(self, state: dict[str, Any]) -> dict[str, int | float | None]:
        """Feature name -> value as of the state's ``as_of_ts``.

        >>> FeatureSet("item", []).values({"as_of_ts": None, "stores": []})
        {}
        """
        t = state["as_of_ts"]
        if t is None:
            return dict(self._empty)
        return self._values(state["stores"], t)

    def _values(self, stores: list[Any], t: int) -> dict[str, int | float | None]:
        sums: list[int] = []
        append = sums.append
        for i, tile_ms, ring, n, window_count in self._windows:
            tiles = stores[i]
            # The common cases of TileCounts.window_count, inlined: this is the hot path.
            if not tiles:
                append(0)
                continue
            moved = t // tile_ms - tiles[0]
            if moved == 0 and n == ring:
                append(sum(tiles) - tiles[0])
            elif moved >= n:
                append(0)
            else:
                append(window_count(tiles, t, n))
        return {
            name: sums[k] if k >= 0 else read(stores, t, sums)
            for name, k, read in self._features
        }

    def record(self, entity_id: str, state: dict[str, Any]) -> dict[str, Any]:
        """The published feature record of one entity key, as of the state's as_of_ts.

        >>> FeatureSet("item", []).record("i1", {"as_of_ts": 5, "stores": []})
        {'entity': 'item', 'id': 'i1', 'as_of_ts': 5, 'schema_version': 1, 'features': {}}
        """
        return {
            "entity": self.entity,
            "id": entity_id,
            "as_of_ts": state["as_of_ts"],
            "schema_version": SCHEMA_VERSION,
            "features": self.values(state),
        }
