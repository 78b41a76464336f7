"""FeatureSet: every feature of one entity, planned over shared stores.

A set collects its specs' stores (equal share keys become one store, the widest
declaration wins), binds each spec to its stores' positions, and names its state
after its whole definition (:attr:`FeatureSet.state_name`): a changed definition
never resumes stale state. :class:`~features.table.FeatureTable` holds one
partition's state of a set and runs batches through it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from features.spec import ENTITIES, FeatureSpec
from features.store import Store

#: Bumped when the engine's state layout changes; part of every state_name.
STATE_LAYOUT_VERSION: Final = 2


class FeatureSet:
    """The features of one entity ("user" or "item") and the stores they share.

    >>> from features.spec import Count, SmoothedCtr
    >>> fs = FeatureSet("user", [
    ...     FeatureSpec("clicks_1h", 1, "user", "clicks", 3_600_000, Count()),
    ...     FeatureSpec("ctr_1h", 1, "user", "any", 3_600_000, SmoothedCtr())])
    >>> fs.names, [type(s).__name__ for s in fs.stores], fs.reads
    (('clicks_1h', 'ctr_1h'), ['TileStore', 'TileStore'], ((0,), (0, 1)))
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
        planned: dict[object, Store] = {}
        wanted: list[list[object]] = []
        for spec in self.specs:
            keys = []
            for store in spec.aggregation.stores(spec):
                if not isinstance(store, Store):
                    raise ValueError(f"feature {spec.name!r}: {store!r} is not a Store")
                key = store.share_key()
                planned[key] = planned[key].widen(store) if key in planned else store
                keys.append(key)
            wanted.append(keys)
        order = list(planned)
        #: the stores of this set, each kept once per key
        self.stores: tuple[Store, ...] = tuple(planned[k] for k in order)
        #: per spec, the positions in :attr:`stores` of the stores it reads
        self.reads: tuple[tuple[int, ...], ...] = tuple(
            tuple(order.index(k) for k in keys) for keys in wanted)
        #: event fields the stores need (e.g. "item_id" for distinct items)
        self.fields: tuple[str, ...] = tuple(sorted(
            {f for spec in self.specs for f in spec.aggregation.needs_fields()}))
        digest = hashlib.sha1(self._definition().encode(), usedforsecurity=False).hexdigest()
        self._state_name = f"{entity}-features-{digest[:8]}"

    def __repr__(self) -> str:
        return f"FeatureSet({self.entity!r}, {[s.name for s in self.specs]!r})"

    def _definition(self) -> str:
        lines = [f"layout={STATE_LAYOUT_VERSION}", f"entity={self.entity}"]
        lines += [spec.fingerprint for spec in self.specs]
        lines += [repr(store) for store in self.stores]
        return "\n".join(lines)

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names, in declaration order.

        >>> FeatureSet("item", []).names
        ()
        """
        return tuple(spec.name for spec in self.specs)

    @property
    def state_name(self) -> str:
        """Stable short name of this set's state, e.g. ``user-features-1a2b3c4d``.

        >>> FeatureSet("item", []).state_name.startswith("item-features-")
        True
        """
        return self._state_name

    @property
    def key_field(self) -> str:
        """The event field that keys this entity (``user_id`` or ``item_id``).

        >>> FeatureSet("item", []).key_field
        'item_id'
        """
        return "user_id" if self.entity == "user" else "item_id"
