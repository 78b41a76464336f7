"""Resident memory of a user partition holding N users' feature state (run by hand).

    .venv/bin/python bench/state_rss.py --users 1000000 [--events-per-user 3]

Feeds N distinct users' events (predictions and clicks) through a real
``engine.users.UserPartition`` with the default catalog (labels and the item side
off: this measures the per-user feature state a worker holds) and prints one JSON
line: RSS before and after, MiB and bytes per user, the table's numpy bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from engine import InputBatch, UserPartition  # noqa: E402
from engine.users import Counters  # noqa: E402
from features.catalog import default_catalog  # noqa: E402

T0 = 1_767_225_600_000


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events-per-user", type=int, default=3)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--trace", action="store_true",
                        help="also count the live Python and numpy memory (tracemalloc, slow)")
    args = parser.parse_args()
    if args.trace:
        import tracemalloc

        tracemalloc.start()
    part = UserPartition(0, default_catalog().user, None, 5_000, None, Counters(),
                         changelog=False)
    before = rss_mib()
    n = args.users * args.events_per_user
    for start in range(0, n, args.batch):
        idx = np.arange(start, min(n, start + args.batch))
        values: list[bytes | None] = []
        source = np.empty(len(idx), dtype=np.int8)
        for j, i in enumerate(idx.tolist()):
            user = f"user-{i % args.users:07d}"
            ts = T0 + i * 7
            if i % 5 == 4:
                values.append(orjson.dumps({"user_id": user, "item_id": f"item-{i % 997}",
                                            "ts": ts}))
                source[j] = 0
            else:
                values.append(orjson.dumps({"prediction_id": f"p{i}", "request_id": f"r{i}",
                                            "user_id": user, "item_id": f"item-{i % 997}",
                                            "model_id": "m", "score": 0.5, "ts": ts}))
                source[j] = 1
        part.process(InputBatch(source, idx.astype(np.int64), [None] * len(idx), values))
    after = rss_mib()
    table = part.table
    live = None
    if args.trace:
        import gc
        import tracemalloc

        gc.collect()
        live = tracemalloc.get_traced_memory()[0]
    numpy_bytes = table.as_of.nbytes + table.prov.nbytes + sum(
        b.nbytes for b in table.blocks if isinstance(b, np.ndarray))
    print(json.dumps({"users": len(table), "events": n, "rss_before_mib": round(before, 1),
                      "rss_after_mib": round(after, 1),
                      "state_mib": round(after - before, 1),
                      "bytes_per_user": round((after - before) * 2**20 / len(table)),
                      "numpy_bytes_per_user": round(numpy_bytes / len(table)),
                      "live_bytes_per_user": None if live is None else round(live / len(table))}))


if __name__ == "__main__":
    main()
