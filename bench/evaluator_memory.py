"""Where does the evaluator's memory go as event time passes? (No broker, no worker.)

    .venv/bin/python bench/evaluator_memory.py [--labels 400000] [--days 3] [--json FILE]

Feeds one :class:`evaluation.Evaluator` ``--labels`` final labels spread evenly over
``--days`` of prediction time (``--models`` models in turn, seeded random scores, a
10 % click rate), advancing every ``--advance-every`` labels as the evaluation stage
does, and reports after every ``--report-every`` labels the memory Python holds for it
(``tracemalloc``, this process's allocations since the start) with the sizes of the
structures that grow: the cumulative window's score counts (one per distinct score,
for ever), each sliding window's, the tiles kept for the widest window and the label
ids remembered for the dedupe horizon. The windows and ids stop growing once their
horizon (a day by default) has passed; the cumulative counts do not.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation import Evaluator  # noqa: E402

DAY_MS = 86_400_000


def sizes(ev: Evaluator) -> dict[str, Any]:
    """Entries of the structures that hold per-label state, summed over models."""
    models = list(ev.models.values())
    # every model has the same windows, in the config's order
    names = [w.name for w in models[0].windows] if models else []
    return {
        "cumulative_score_counts": sum(len(m.scores.counts) for m in models),
        "window_score_counts": {name: sum(len(m.windows[i].scores.counts) for m in models)
                                for i, name in enumerate(names)},
        "tile_score_counts": sum(len(t.scores.counts) for m in models
                                 for t in m.tiles.values()),
        "dedupe_ids": sum(len(s) for s in ev._seen.values()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=int, default=400_000)
    ap.add_argument("--days", type=float, default=3.0, help="days of prediction time")
    ap.add_argument("--models", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--advance-every", type=int, default=2_000)
    ap.add_argument("--report-every", type=int, default=50_000)
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    args = ap.parse_args(argv)
    if args.labels < 1 or args.days <= 0 or args.models < 1:
        ap.error("--labels and --models must be >= 1 and --days > 0")
    rng = random.Random(args.seed)
    models = [f"m{k}" for k in range(args.models)]
    step_ms = max(1, int(args.days * DAY_MS) // args.labels)
    ev = Evaluator()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    rows: list[dict[str, Any]] = []
    for n in range(args.labels):
        ts = n * step_ms
        ev.add_label({"prediction_id": f"p{n:010d}", "request_id": f"r{n}",
                      "user_id": f"u{n % 2_000}", "item_id": f"i{n % 2_000}",
                      "label_version": 1, "final": True, "kind": "negative",
                      "model_id": models[n % len(models)], "score": rng.random(),
                      "label": int(rng.random() < 0.1), "prediction_ts": ts})
        if (n + 1) % args.advance_every == 0:
            ev.advance(ts)
        if (n + 1) % args.report_every == 0 or n + 1 == args.labels:
            held = tracemalloc.get_traced_memory()[0] - base
            row = {"labels": n + 1, "event_time_days": round(ts / DAY_MS, 3),
                   "traced_mib": round(held / 2**20, 1),
                   "bytes_per_label": round(held / (n + 1), 1), **sizes(ev)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    tracemalloc.stop()
    # growth per label once a day has passed: what stays unbounded
    after = [r for r in rows if r["event_time_days"] >= 1.0 + 1e-9]
    slope = None
    if len(after) >= 2:
        d_bytes = (after[-1]["traced_mib"] - after[0]["traced_mib"]) * 2**20
        slope = round(d_bytes / (after[-1]["labels"] - after[0]["labels"]), 1)
    out = {"labels": args.labels, "days": args.days, "models": args.models,
           "seed": args.seed, "samples": rows,
           "bytes_per_label_after_first_day": slope}
    print(f"growth per label after the first day of event time: {slope} B")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
