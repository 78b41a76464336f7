"""Throughput of the pure feature engine: FeatureSet.update + record per event.

Run: ``.venv/bin/python bench/engine_only.py [n_events]``. Prints events/s for
the default catalog's user set, item set and both (what a worker does per event).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

# bench/features.py would shadow the `features` package: import from the repo root.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from events.contracts import Click, Prediction  # noqa: E402
from features.catalog import default_catalog  # noqa: E402
from features.featureset import FeatureSet  # noqa: E402

T0 = 1_700_000_000_000


def generate(n: int, seed: int = 1) -> list[tuple[str, Click | Prediction]]:
    """n events, ~10 % clicks, 20k users and 5k items, ~10 ms apart, clicks up to 5 s late."""
    rng = random.Random(seed)
    users = [f"user-{i:06d}" for i in range(20_000)]
    items = [f"item-{i:06d}" for i in range(5_000)]
    events: list[tuple[str, Click | Prediction]] = []
    t = T0
    for i in range(n):
        t += rng.randrange(20)
        user, item = rng.choice(users), rng.choice(items)
        if rng.random() < 0.1:
            events.append(("clicks", Click(user, item, t - rng.randrange(5_000))))
        else:
            events.append(("predictions", Prediction(f"p{i}", "r", user, item, "m", 0.5, t)))
    return events


def run(sets: list[FeatureSet], events: list[tuple[str, Click | Prediction]]) -> float:
    """Seconds to apply every event to every set, building a record each time."""
    tables: list[dict[str, dict[str, Any]]] = [{} for _ in sets]
    start = time.perf_counter()
    for source, event in events:
        for fs, table in zip(sets, tables, strict=True):
            key = fs.key_of(source, event)
            state = table.get(key)
            if state is None:
                state = table[key] = fs.new_state()
            fs.update(state, source, event)
            fs.record(key, state)
    return time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    events = generate(n)
    catalog = default_catalog()
    for label, sets in (
        ("user", [catalog.user]),
        ("item", [catalog.item]),
        ("user+item", [catalog.user, catalog.item]),
    ):
        best = min(run(sets, events) for _ in range(3))
        sys.stdout.write(f"{label:10s} update+record: {n / best:>10,.0f} events/s\n")


if __name__ == "__main__":
    main()
