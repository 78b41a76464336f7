"""Drive a FeatureTable with (source, event) lists, in batches of any sizes.

Shared by the feature tests: it only turns events into the columns the engine takes
(offsets count each source's records, the provenance is the source) and reads the
values back as plain dicts. The values it returns are the engine's; the tests
compare them with their own oracles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from events.contracts import Click, Prediction
from features.batch import SOURCE_CODES
from features.featureset import FeatureSet
from features.table import BatchValues, FeatureTable

Event = tuple[str, Click | Prediction]


def columns(fs: FeatureSet, table: FeatureTable, events: Sequence[Event],
            offsets: dict[str, int]) -> dict[str, object]:
    keys = [getattr(e, fs.key_field) for _, e in events]
    source = np.array([SOURCE_CODES[s] for s, _ in events], dtype=np.int8)
    offset = []
    for s, _ in events:
        offset.append(offsets[s])
        offsets[s] += 1
    return {
        "rows": table.rows_for(keys),
        "ts": np.array([e.ts for _, e in events], dtype=np.int64),
        "source": source,
        "prov": source.astype(np.int64),
        "offset": np.array(offset, dtype=np.int64),
        "fields": {"item_id": np.array([e.item_id for _, e in events], dtype=object),
                   "user_id": np.array([e.user_id for _, e in events], dtype=object)},
    }


def split(events: Sequence[Event], sizes: Sequence[int] | None) -> list[Sequence[Event]]:
    """``events`` cut into consecutive batches of ``sizes`` (cycled); None: one batch."""
    if not sizes:
        return [events] if events else []
    out, i, k = [], 0, 0
    while i < len(events):
        n = max(1, sizes[k % len(sizes)])
        out.append(events[i:i + n])
        i, k = i + n, k + 1
    return out


def run(fs: FeatureSet, events: Sequence[Event], sizes: Sequence[int] | None = None,
        points: bool = False) -> tuple[dict[str, dict[str, object]], list[dict[str, object]]]:
    """Final values per key, and (``points``) the values at every event, in order."""
    table = FeatureTable(fs, provenances=2, capacity=4)
    offsets = {"clicks": 0, "predictions": 0}
    at_events: list[dict[str, object]] = []
    for batch in split(events, sizes):
        cols = columns(fs, table, batch, offsets)
        mask = np.ones(len(batch), dtype=np.bool_) if points else None
        out = apply(table, cols, mask)
        if points:
            for i in range(len(batch)):
                at_events.append({name: v.to_list()[i]
                                  for name, v in zip(fs.names, out.point_values, strict=True)})
    return final_values(fs, table), at_events


def apply(table: FeatureTable, cols: dict[str, object], points: np.ndarray | None
          ) -> BatchValues:
    return table.apply(cols["rows"], cols["ts"], cols["source"], cols["prov"],  # type: ignore[arg-type]
                       cols["offset"], points=points, fields=cols["fields"])  # type: ignore[arg-type]


def final_values(fs: FeatureSet, table: FeatureTable) -> dict[str, dict[str, object]]:
    rows = np.arange(len(table), dtype=np.int64)
    values = table.read(rows)
    lists = [v.to_list() for v in values]
    return {key: {name: col[i] for name, col in zip(fs.names, lists, strict=True)}
            for i, key in enumerate(table.ids)}


def values_of(fs: FeatureSet, events: Sequence[Event],
              sizes: Sequence[int] | None = None) -> dict[str, object]:
    """The values of the one key of ``events`` (a fresh key's values if empty)."""
    final, _ = run(fs, events, sizes)
    if not final:
        table = FeatureTable(fs, provenances=2)
        rows = table.rows_for(["fresh"])
        return {name: v.to_list()[0] for name, v in zip(fs.names, table.read(rows),
                                                       strict=True)}
    (values,) = final.values()
    return values
