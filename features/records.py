"""Feature records as JSON bytes, built from the engine's columns with msgspec.

A record is ``{"entity", "id", "as_of_ts", "schema_version", "features": {...}}``
plus, when the caller knows it, ``"source"``: the partition and the last input
offset it includes per provenance (see README, ``features.user``). Snapshots (a
key's features as of one event, kept with a pending label) are
``{"as_of_ts", "features", "source"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from events.contracts import SCHEMA_VERSION
from features.aggregation import Values
from features.batch import NONE
from features.featureset import FeatureSet

I64 = npt.NDArray[np.int64]


class RecordEncoder:
    """Encodes one feature set's values as records and snapshots.

    >>> from features.catalog import first_feature_catalog
    >>> enc = RecordEncoder(first_feature_catalog().user, ("clicks", "predictions"))
    >>> enc.records(["u1"], np.array([7]), [Values(np.array([2]))], np.array([[3, -1]]), 0)
    [b'{"entity":"user","id":"u1","as_of_ts":7,"schema_version":1,"features":{"clicks_5m":2},\
"source":{"partition":0,"clicks":3}}']
    """

    def __init__(self, features: FeatureSet, provenances: Sequence[str]) -> None:
        self.features = features
        self.provenances = tuple(provenances)
        names = features.names
        self._features = msgspec.defstruct(
            f"{features.entity.title()}Features", [(f"f{i}", Any) for i in range(len(names))],
            rename={f"f{i}": name for i, name in enumerate(names)}, array_like=False)
        self._source = msgspec.defstruct(
            "Source", [("partition", int)] + [(f"p{i}", Any, None)
                                              for i in range(len(self.provenances))],
            rename={"partition": "partition",
                    **{f"p{i}": p for i, p in enumerate(self.provenances)}},
            omit_defaults=True)
        self._record = msgspec.defstruct(
            "FeatureRecord", [("entity", str), ("id", str), ("as_of_ts", Any),
                              ("schema_version", int), ("features", Any),
                              ("source", Any, msgspec.UNSET)])
        self._snapshot = msgspec.defstruct(
            "FeatureSnapshot", [("as_of_ts", Any), ("features", Any), ("source", Any)])
        self._encode_lines = msgspec.json.Encoder().encode_lines

    def _feature_objects(self, values: Sequence[Values], n: int) -> list[Any]:
        columns = [v.to_list() for v in values]
        make = self._features
        if not columns:
            return [make() for _ in range(n)]
        return [make(*row) for row in zip(*columns, strict=True)]

    def _sources(self, prov: I64, partition: int) -> list[Any]:
        make = self._source
        rows = prov.astype(object)
        rows[prov < 0] = None  # a provenance the key has no event of yet
        return [make(partition, *row) for row in rows.tolist()]

    def records(self, ids: Sequence[str], as_of: I64, values: Sequence[Values],
                prov: I64 | None, partition: int) -> list[bytes]:
        """One record per key (``prov`` None: without ``source``, as the read path answers)."""
        n = len(ids)
        objects = self._feature_objects(values, n)
        times = [None if t == NONE else t for t in as_of.tolist()]
        make, entity = self._record, self.features.entity
        if prov is None:
            items = [make(entity, key, t, SCHEMA_VERSION, f)
                     for key, t, f in zip(ids, times, objects, strict=True)]
        else:
            sources = self._sources(prov, partition)
            items = [make(entity, key, t, SCHEMA_VERSION, f, s)
                     for key, t, f, s in zip(ids, times, objects, sources, strict=True)]
        return self._lines(items)

    def _lines(self, items: list[Any]) -> list[bytes]:
        # one encoder call for all records, cut at the newlines (JSON text has none)
        if not items:
            return []
        return self._encode_lines(items).split(b"\n")[:-1]

    def snapshots(self, as_of: I64, values: Sequence[Values], prov: I64,
                  partition: int) -> list[bytes]:
        """One ``{as_of_ts, features, source}`` object per point read."""
        n = len(as_of)
        objects = self._feature_objects(values, n)
        sources = self._sources(prov, partition)
        make = self._snapshot
        return self._lines([make(t, f, s)
                            for t, f, s in zip(as_of.tolist(), objects, sources, strict=True)])
