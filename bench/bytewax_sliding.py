"""Bytewax's event-time sliding-window count, for the feature benchmark's peers.

Runs in its own virtualenv (``.venv-bench-bytewax``: ``bytewax[kafka]==0.21.1`` and
orjson), which ``bench/peers.py`` creates on first use through
``ensure_bytewax_venv()``; it imports nothing from freshet::

    .venv-bench-bytewax/bin/python bench/bytewax_sliding.py --bootstrap B \\
        --topics T1,T2 --total N --progress FILE --output FILE [--wait-seconds S] \\
        [--workers 1]

The same job as the Quix peer (``bench/quix_hopping.py``): both input topics
(``bytewax.connectors.kafka.operators.input``, every partition of each, from the
beginning), each JSON value decoded with orjson, and every event counted per
``user_id`` in 5-minute windows sliding every 25 s in event time (the value's
``ts``, epoch ms): ``count_window(EventClock, SlidingWindower(5 min, 25 s,
align_to=epoch))``, so the windows start at multiples of 25 s as Quix's do and
every event falls in exactly 12 of them.

Two Bytewax pitfalls on a historical backlog (see BENCH-NOTES):

* ``EventClock`` by default asks the runtime to wake each key at its next window's
  close time converted to the system clock. The backlog's event time is far behind
  the wall clock, so every key is due at once on every activation and the app falls
  to ~300 events/s. ``to_system_utc=lambda t: None`` turns those wake-ups off:
  windows close on the key's own later items, or at the end of the input.
* The clock (and its watermark) is per key, and the Kafka source reads partitions
  round-robin in batches, so the small clicks topic is read far ahead (in event
  time) of the predictions topic. ``wait_for_system_duration`` must be longer than
  that lead or a user's predictions are dropped as late after a click of theirs;
  ``--wait-seconds`` (default 1 day; the parent passes the backlog's event-time span
  plus an hour) makes no event late, so windows close at the end of the input.

The source runs with ``tail=False``: it stops at the end of each partition, the
remaining windows are closed and emitted, and the app exits by itself. Events are
counted (in a ``map`` before the window) into ``--progress`` as
``{"count", "first", "last"}``, like ``bench/_common.Progress``; at the end the app
adds ``"last_output"`` (wall-clock time of the last window emitted) and ``"done"``.
``--output`` gets the emitted counts for the parent to check:
``{"windows": [[user_id, window_start_ms, count], ...], "late": n, "repeated": n,
"events": n}`` (late: (event, window) pairs dropped as late; repeated: windows
emitted more than once, their counts added up).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.bytewax")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
HOP = timedelta(seconds=25)


class Progress:
    """Same file format as ``bench/_common.Progress`` (kept here: other venv)."""

    def __init__(self, path: Path, total: int, every: int = 2_000) -> None:
        self.path, self.total, self.every = path, total, every
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def tick(self) -> None:
        now = time.time()
        if self.count == 0:
            self.first = now
        self.count += 1
        self.last = now
        if self.count % self.every == 0 or self.count == self.total:
            self.write()

    def write(self, **extra: Any) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"count": self.count, "first": self.first,
                                   "last": self.last, **extra}))
        tmp.replace(self.path)


def build_flow(args: argparse.Namespace, progress: Progress,
               windows: dict[tuple[str, int], int], late: list[int],
               last_output: list[float]) -> Any:
    """The dataflow; emitted windows go into ``windows``; ``late[0]`` counts late
    (event, window) entries, ``late[1]`` windows emitted more than once."""
    import bytewax.operators as op  # type: ignore[import-not-found]  # own venv
    from bytewax.connectors.kafka import operators as kop  # type: ignore[import-not-found]
    from bytewax.dataflow import Dataflow  # type: ignore[import-not-found]
    from bytewax.operators.windowing import (  # type: ignore[import-not-found]
        EventClock,
        SlidingWindower,
        count_window,
    )
    from bytewax.outputs import DynamicSink, StatelessSinkPartition  # type: ignore[import-not-found]
    from orjson import loads  # type: ignore[import-not-found]

    tick = progress.tick
    hop_ms = int(HOP.total_seconds() * 1000)

    class WindowPart(StatelessSinkPartition):  # type: ignore[misc]
        def write_batch(self, items: list[tuple[str, tuple[int, int]]]) -> None:
            for user, (window_id, count) in items:
                key = (user, window_id * hop_ms)
                if key in windows:  # emitted twice: keep the total, count the repeat
                    late[1] += 1
                    count += windows[key]
                windows[key] = count
            last_output[0] = time.time()

    class WindowSink(DynamicSink):  # type: ignore[misc]
        def build(self, step_id: str, worker_index: int, worker_count: int) -> WindowPart:
            return WindowPart()

    class LatePart(StatelessSinkPartition):  # type: ignore[misc]
        def write_batch(self, items: list[Any]) -> None:
            late[0] += len(items)

    class LateSink(DynamicSink):  # type: ignore[misc]
        def build(self, step_id: str, worker_index: int, worker_count: int) -> LatePart:
            return LatePart()

    def parse(msg: Any) -> tuple[str, int]:
        event = loads(msg.value)
        tick()
        return event["user_id"], event["ts"]

    def event_time(item: tuple[str, int]) -> datetime:
        return EPOCH + timedelta(milliseconds=item[1])

    def fail(err: Any) -> None:
        raise RuntimeError(f"Kafka error: {err.err}")

    flow = Dataflow("bench-bytewax-sliding")
    kin = kop.input("kafka_in", flow, brokers=[args.bootstrap],
                    topics=args.topics.split(","), tail=False)
    op.inspect("kafka_errors", kin.errs, lambda _step, err: fail(err))
    events = op.map("parse", kin.oks, parse)
    clock = EventClock(event_time, wait_for_system_duration=timedelta(seconds=args.wait_seconds),
                       to_system_utc=lambda _t: None)
    windower = SlidingWindower(length=WINDOW, offset=HOP, align_to=EPOCH)
    out = count_window("count_5m_every_25s", events, clock, windower, key=lambda e: e[0])
    op.output("windows", out.down, WindowSink())
    op.output("late", out.late, LateSink())
    return flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated input topics")
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--progress", required=True)
    parser.add_argument("--output", required=True, help="JSON file of the emitted counts")
    parser.add_argument("--wait-seconds", type=float, default=86_400.0,
                        help="EventClock wait_for_system_duration (longer than the lead "
                             "of one topic over the other, in event time)")
    parser.add_argument("--workers", type=int, default=1, help="workers in this process")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.loglevel, format="%(asctime)s %(name)s %(message)s")
    from bytewax.run import cli_main  # type: ignore[import-not-found]  # own venv

    progress = Progress(Path(args.progress), args.total)
    windows: dict[tuple[str, int], int] = {}
    late, last_output = [0, 0], [0.0]
    flow = build_flow(args, progress, windows, late, last_output)
    started = time.time()
    log.info("running the dataflow (%d worker(s)), wait_for_system_duration %.0f s",
             args.workers, args.wait_seconds)
    cli_main(flow, workers_per_process=args.workers)
    ended = time.time()
    log.info("dataflow done in %.2f s: %d events, %d windows (%d emitted again), "
             "%d late (event, window) entries", ended - started, progress.count,
             len(windows), late[1], late[0])
    out = Path(args.output)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"windows": [[u, s, n] for (u, s), n in windows.items()],
                               "late": late[0], "repeated": late[1],
                               "events": progress.count}))
    tmp.replace(out)
    # Last, so that "done" means the output file is complete.
    progress.write(last_output=last_output[0], ended=ended, done=True)


if __name__ == "__main__":
    main()
