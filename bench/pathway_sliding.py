"""Pathway's event-time sliding-window count, for the feature benchmark's peers.

Runs in its own virtualenv (``.venv-bench-pathway``: ``pathway==0.33.0`` and orjson),
which ``bench/peers.py`` creates on first use through ``ensure_pathway_venv()``; it
imports nothing from freshet::

    .venv-bench-pathway/bin/python bench/pathway_sliding.py --bootstrap B \\
        --topics T1,T2 --total N --progress FILE --output FILE --group G \\
        [--threads 1] [--startup-seconds S]

The same job as the Quix peer (``bench/quix_hopping.py``): both input topics, JSON
values (``user_id``, ``ts`` = event time in epoch ms), every event counted per
``user_id`` in 5-minute windows sliding every 25 s in event time::

    t.windowby(t.ts, window=pw.temporal.sliding(hop=25_000, duration=300_000, origin=0),
               instance=t.user_id).reduce(user=..., start=..., n=pw.reducers.count())

Pathway's quirks here (see BENCH-NOTES):

* ``pw.io.kafka.read`` given a list of topics reads only the first one (with a
  deprecation warning): each topic is read on its own and the tables are joined
  with ``concat_reindex``.
* Sliding windows drop every window that starts before ``origin``, so the origin
  must lie at least one window length before the first event: ``origin=0`` (the
  epoch) aligns the windows to multiples of 25 s, as Quix's and Bytewax's are, and
  puts every event in exactly 12 windows.
* The readers use ``mode="static"``: Pathway reads what the topics hold when it
  starts, computes, writes the final aggregate and ``pw.run()`` returns, so the app
  stops by itself. Processing cannot be timed per event without a Python callback
  per row, so the app times ``pw.run()`` as a whole; the parent first runs the same
  app on two empty topics and passes that run's time as ``--startup-seconds``
  (graph build, Kafka group join, reader and writer start and shutdown), and the
  progress file says ``first = start of pw.run() + startup``, ``last = end of
  pw.run()``.
* The engine's threads come from ``PATHWAY_THREADS`` (``--threads`` sets it).

Outputs: ``--output`` gets the window table as Pathway's JSON lines
(``{"user", "start", "n", "diff", "time"}``; in static mode only insertions), which
the parent checks against the counts it computes from the produced log; a one-row
``count()`` of the input (subscribed, one callback per minibatch) gives the events
read. ``--progress`` gets ``{"count", "first", "last", "run_seconds",
"startup_seconds", "done"}`` once ``pw.run()`` has returned.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.pathway")

WINDOW_MS = 300_000
HOP_MS = 25_000


def build_graph(args: argparse.Namespace, seen: list[int]) -> None:
    """Readers, the windowed count (to ``--output``) and the input count (to ``seen``)."""
    import pathway as pw  # type: ignore[import-not-found]  # own venv

    class Event(pw.Schema):  # type: ignore[misc]
        user_id: str
        ts: int

    def read(topic: str) -> Any:
        settings = {"bootstrap.servers": args.bootstrap, "group.id": args.group,
                    "auto.offset.reset": "earliest"}
        return pw.io.kafka.read(settings, topic=topic, format="json", schema=Event,
                                mode="static", name=topic)

    tables = [read(topic) for topic in args.topics.split(",")]
    events = tables[0]
    for other in tables[1:]:
        events = events.concat_reindex(other)
    counts = events.windowby(
        events.ts,
        window=pw.temporal.sliding(hop=HOP_MS, duration=WINDOW_MS, origin=0),
        instance=events.user_id,
    ).reduce(user=pw.this._pw_instance, start=pw.this._pw_window_start,
             n=pw.reducers.count())
    pw.io.jsonlines.write(counts, args.output)

    def on_change(key: Any, row: dict[str, Any], time: int, is_addition: bool) -> None:
        if is_addition:
            seen[0] = row["n"]

    pw.io.subscribe(events.reduce(n=pw.reducers.count()), on_change=on_change)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated input topics")
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--progress", required=True)
    parser.add_argument("--output", required=True, help="JSON lines of the window counts")
    parser.add_argument("--group", required=True, help="Kafka consumer group id")
    parser.add_argument("--threads", type=int, default=None,
                        help="engine threads (sets PATHWAY_THREADS)")
    parser.add_argument("--startup-seconds", type=float, default=0.0,
                        help="time of the same run on empty topics, subtracted")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args()
    if args.threads:
        os.environ["PATHWAY_THREADS"] = str(args.threads)
    logging.basicConfig(level=args.loglevel, format="%(asctime)s %(name)s %(message)s")
    import pathway as pw  # type: ignore[import-not-found]  # own venv

    seen = [0]
    build_graph(args, seen)
    log.info("pw.run() with PATHWAY_THREADS=%s", os.environ.get("PATHWAY_THREADS", "(unset)"))
    start = time.time()
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    end = time.time()
    log.info("pw.run() took %.2f s for %d events (start-up of an empty run: %.2f s)",
             end - start, seen[0], args.startup_seconds)
    path = Path(args.progress)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"count": seen[0], "first": start + args.startup_seconds,
                               "last": end, "run_seconds": end - start,
                               "startup_seconds": args.startup_seconds, "done": True}))
    tmp.replace(path)


if __name__ == "__main__":
    main()
