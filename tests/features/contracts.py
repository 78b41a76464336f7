"""The contract every aggregation (built-in or a user's) must keep, as reusable checks.

``tests/features/test_features_contracts.py`` runs these over every registered
aggregation's ``examples()``; a user's test suite can call :func:`check_aggregation`
on their own. What an aggregation promises:

- **batch independence**: values read at every event are the same whether the
  events come in one batch, one by one, or in batches of any sizes;
- **key isolation**: a key's values do not depend on other keys' events in the batch;
- **changelog round trip**: a table rebuilt from its encoded rows after every batch
  reads and continues exactly like the live one;
- **merge**: merging the states of two keys that saw A and B equals one key that saw
  A + B (read as of the later as-of), for stores whose value depends only on the set
  of events (all built-ins within their horizon);
- **types**: values are ints or floats as declared, null only if declared nullable;
  a key with no event reads the declared empty values.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from events.contracts import Click, Prediction
from features.featureset import FeatureSet
from features.spec import FeatureSpec
from features.table import FeatureTable
from tests.features.drive import Event, apply, columns, final_values, run

T0 = 1_767_225_600_000


def random_log(seed: int, n: int = 120, keys: Sequence[str] = ("k1", "k2", "k3"),
               span_ms: int = 3_000_000, lateness_ms: int = 60_000) -> list[Event]:
    """A seeded log over a few users and items, in roughly increasing time."""
    rng = random.Random(seed)
    out: list[Event] = []
    base = T0
    for _ in range(n):
        base += rng.randrange(span_ms // n * 2 + 1)
        ts = base - (rng.randrange(lateness_ms) if rng.random() < 0.2 else 0)
        user, item = rng.choice(keys), rng.choice(keys)
        if rng.random() < 0.35:
            out.append(("clicks", Click(user, item, ts)))
        else:
            out.append(("predictions", Prediction("p", "r", user, item, "m", 0.5, ts)))
    return out


def close(a: Any, b: Any) -> bool:
    """Equal values; floats within 1e-9 relative."""
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300)
    return bool(a == b)


def same(rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]]) -> bool:
    return len(rows_a) == len(rows_b) and all(
        a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        for a, b in zip(rows_a, rows_b, strict=True))


def check_batch_independence(fs: FeatureSet, log: list[Event]) -> None:
    _, one = run(fs, log, None, points=True)
    for sizes in ([1], [7], [3, 11, 2]):
        _, other = run(fs, log, sizes, points=True)
        assert same(one, other), (fs, sizes)


def check_key_isolation(fs: FeatureSet, log: list[Event]) -> None:
    field = fs.key_field
    key = getattr(log[0][1], field)
    alone = [(s, e) for s, e in log if getattr(e, field) == key]
    _, mixed = run(fs, log, [5], points=True)
    _, single = run(fs, alone, [5], points=True)
    mine = [v for (_, e), v in zip(log, mixed, strict=True) if getattr(e, field) == key]
    assert same(mine, single), fs


def check_changelog_round_trip(fs: FeatureSet, log: list[Event]) -> None:
    live, restored = FeatureTable(fs, 2), FeatureTable(fs, 2)
    off_live = {"clicks": 0, "predictions": 0}
    off_restored = dict(off_live)
    for start in range(0, len(log), 17):
        batch = log[start:start + 17]
        a = apply(live, columns(fs, live, batch, off_live), np.ones(len(batch), np.bool_))
        again = FeatureTable(fs, 2)
        again.load(restored.ids, restored.encode(np.arange(len(restored), dtype=np.int64)))
        restored = again
        b = apply(restored, columns(fs, restored, batch, off_restored),
                  np.ones(len(batch), np.bool_))
        assert [v.to_list() for v in a.point_values] == [v.to_list() for v in b.point_values]
    assert same([final_values(fs, live)], [final_values(fs, restored)])


def check_merge(fs: FeatureSet, log: list[Event]) -> None:
    """Split one key's events in two; merged states read like the whole."""
    field = fs.key_field
    key = getattr(log[0][1], field)
    events = [(s, e) for s, e in log if getattr(e, field) == key]
    if len(events) < 2:
        return
    cut = len(events) // 2
    parts = {"a": events[:cut], "b": events[cut:], "ab": events}
    table = FeatureTable(fs, 2)
    offsets = {"clicks": 0, "predictions": 0}
    for name, evs in parts.items():
        renamed = [(s, _with_key(e, field, name)) for s, e in evs]
        apply(table, columns(fs, table, renamed, offsets), None)
    ra, rb, rab = (table.rows_for([n])[0] for n in ("a", "b", "ab"))
    merged = table.rows_for(["m"])[0]
    as_of = max(table.as_of[ra], table.as_of[rb])
    table.as_of[merged] = as_of
    for store, block in zip(fs.stores, table.blocks, strict=True):
        state = store.merge(block[ra], int(table.as_of[ra]), block[rb], int(table.as_of[rb]))
        block[merged] = state
    rows = np.array([merged, rab], dtype=np.int64)
    got = [v.to_list() for v in table.read(rows)]
    for name, (m, whole) in zip(fs.names, got, strict=True):
        assert close(m, whole), (name, m, whole)


def _with_key(event: Click | Prediction, field: str, key: str) -> Click | Prediction:
    from dataclasses import replace

    return replace(event, **{field: key})


def check_types_and_empty(fs: FeatureSet, log: list[Event]) -> None:
    final, _ = run(fs, log, [9])
    empty = FeatureTable(fs, 2)
    fresh = empty.read(empty.rows_for(["nobody"]))
    for spec, values in zip(fs.specs, fresh, strict=True):
        (value,) = values.to_list()
        _check_type(spec, value)
    for values in final.values():
        for spec in fs.specs:
            _check_type(spec, values[spec.name])


def _check_type(spec: FeatureSpec, value: Any) -> None:
    agg = spec.aggregation
    if value is None:
        assert agg.nullable, f"{spec.name} is not nullable but read null"
        return
    wanted = int if agg.value_type == "int" else float
    assert type(value) is wanted, (spec.name, value, agg.value_type)


def check_aggregation(spec: FeatureSpec, seeds: Sequence[int] = (1, 2, 3)) -> None:
    """Every contract check above, for one feature spec (alone in its entity's set)."""
    fs = FeatureSet(spec.entity, [spec])
    logs = [random_log(seed) for seed in seeds]
    # one busy key over twice its window (unwindowed: 50 min, within the sessions'
    # horizon): many tiles and sessions cross every batch boundary
    span = 2 * spec.window_ms if spec.window_ms else 3_000_000
    logs += [random_log(seed, n=400, keys=("k1",), span_ms=span,
                        lateness_ms=(spec.tile_ms or 60_000) * 3) for seed in seeds]
    for log in logs:
        check_batch_independence(fs, log)
        check_key_isolation(fs, log)
        check_changelog_round_trip(fs, log)
        check_merge(fs, log)
        check_types_and_empty(fs, log)
