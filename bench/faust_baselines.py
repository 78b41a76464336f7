"""Plain Faust apps the feature benchmark compares freshet with.

Run by ``bench/features.py`` as a subprocess, one app per process::

    python bench/faust_baselines.py count   --bootstrap B --topics T1,T2 --total N \\
        --progress FILE --app-id ID --datadir DIR
    python bench/faust_baselines.py hopping ...same...

``count``   Faust's own ceiling: an agent that only counts events (raw values).
``hopping`` The Faust documentation's way to count: a hopping windowed table (5 min
            windows every 25 s, so 12 windows per event) updated per event with
            ``table[user] += 1``, values decoded by Faust's JSON codec. The input
            topics are keyed by ``user_id`` already, so no ``group_by`` is needed.

Each app counts the events it has processed in a progress file
(``{"count", "first", "last"}``, see ``bench/_common.Progress``); the parent stops it
with SIGTERM once the count reaches ``--total``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import faust

# Import the shared helpers as ``bench._common``, from the repository root.
sys.path[0] = str(Path(__file__).resolve().parents[1])
from bench._common import Progress  # noqa: E402

log = logging.getLogger("bench.faust")


def build_app(args: argparse.Namespace) -> faust.App:
    """The Faust app for ``args.mode``, configured like a Faust user would."""
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        store="memory://" if args.store == "memory" else "rocksdb://",
        datadir=args.datadir,
        web_enabled=False,
        topic_partitions=args.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
        logging_config=None,
    )
    progress = Progress(Path(args.progress), args.total)
    topics = args.topics.split(",")

    if args.mode == "count":
        source = app.topic(*topics, key_type=bytes, value_type=bytes, value_serializer="raw")

        @app.agent(source)
        async def count(stream: faust.StreamT[Any]) -> None:
            async for _value in stream:
                progress.tick()

    else:
        source = app.topic(*topics, key_type=bytes, value_serializer="json")
        # As in Faust's "Windowing" docs: a windowed table with a default, expiring.
        events_5m = app.Table("user-events-5m", default=int,
                              partitions=args.partitions).hopping(
            timedelta(minutes=5), timedelta(seconds=25), expires=timedelta(minutes=10))

        @app.agent(source)
        async def count_per_user(events: faust.StreamT[Any]) -> None:
            async for event in events:
                events_5m[event["user_id"]] += 1
                progress.tick()

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("count", "hopping"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated input topics")
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--progress", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--store", choices=("rocksdb", "memory"), default="rocksdb")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    app = build_app(args)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "info"]
    app.main()


if __name__ == "__main__":
    main()
