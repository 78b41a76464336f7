"""The floor under a worker's commit: bare Kafka transactions on a broker of its own.

    .venv/bin/python bench/transaction_floor.py [--transactions 300] [--partitions 64]
                                                [--config linger.ms=0 ...] [--json FILE]

Starts a local broker on free loopback ports (``bench._common.broker``: a
``LocalKafka`` under ``var/``), makes 16 output topics of ``--partitions / 16``
partitions and an input topic of 4, then, per ``--config`` (``-`` is the worker's own
producer, ``streams.kafka.transactional_producer`` with the default settings; each
config adds ``key=value,...`` on top), runs ``--transactions`` transactions like a
worker's: begin, 5 small records to every output partition, the input offsets
(``send_offsets_to_transaction``), commit. The first 20 of each config are a
warm-up. Reports p50 / p90 / p99 / max ms (nearest rank) per config. Bounded, loopback
only; the broker is stopped and its folder removed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if p not in ("", str(Path(__file__).parent))]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from bench._common import broker, create_topics, percentile  # noqa: E402
from freshet.settings import Settings  # noqa: E402
from streams.kafka import transactional_producer  # noqa: E402

WARMUP = 20


def run_config(bootstrap: str, name: str, extra: dict[str, Any], n: int,
               topics: int, per_topic: int, group_metadata: Any) -> dict[str, Any]:
    worker = transactional_producer(Settings(bootstrap_servers=bootstrap))
    producer = Producer({**worker, "transactional.id": f"floor-{name}", **extra})
    producer.init_transactions(30)
    times = []
    for i in range(n + WARMUP):
        started = time.perf_counter()
        producer.begin_transaction()
        for t in range(topics):
            for p in range(per_topic):
                for _ in range(5):
                    producer.produce(f"floor-o{t}", b"x" * 100, b"k", p)
        producer.send_offsets_to_transaction(
            [TopicPartition("floor-in", q, i + 1) for q in range(4)], group_metadata, 30)
        producer.commit_transaction(30)
        times.append((time.perf_counter() - started) * 1000)
    measured = times[WARMUP:]
    return {"config": name, "transactions": len(measured),
            "p50_ms": round(percentile(measured, 50), 1),
            "p90_ms": round(percentile(measured, 90), 1),
            "p99_ms": round(percentile(measured, 99), 1), "max_ms": round(max(measured), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transactions", type=int, default=300)
    ap.add_argument("--partitions", type=int, default=64, help="output partitions (16 topics)")
    ap.add_argument("--config", action="append", default=None,
                    help="'-' or key=value,... added to the worker's producer settings")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.transactions <= 0 or args.partitions < 16:
        ap.error("--transactions must be > 0 and --partitions >= 16")
    configs = args.config or ["-", "linger.ms=0"]
    results = []
    with broker() as bootstrap:
        per_topic = args.partitions // 16
        create_topics(bootstrap, [f"floor-o{t}" for t in range(16)], partitions=per_topic)
        create_topics(bootstrap, ["floor-in"], partitions=4)
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "floor"})
        for name in configs:
            extra = {} if name == "-" else dict(kv.split("=", 1) for kv in name.split(","))
            result = run_config(bootstrap, name, extra, args.transactions, 16,
                                per_topic, consumer.consumer_group_metadata())
            print(json.dumps(result), flush=True)
            results.append(result)
        consumer.close()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"partitions": args.partitions, "results": results},
                                        indent=1))


if __name__ == "__main__":
    main()
