"""What an offset query answers right after a transaction commits (run by hand).

    .venv/bin/python bench/offsets_after_commit.py [--commits 200] [--json FILE]

On a broker of its own (the launcher, loopback): commits ``--commits`` transactions
of 50 records each to a one-partition topic and, right after each
``commit_transaction`` returns, asks a ``read_committed`` and a ``read_uncommitted``
client for the partition's end. Counts the answers short of the committed records:
the figure behind ``streams.state``'s marks and ``streams.changelog``'s restores
asking a read_uncommitted client (the read_committed answer, the last stable offset,
trails a commit until the coordinator has written its markers).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from bench._common import stop_all  # noqa: E402
from bench._supervise import OwnBroker, code_version  # noqa: E402

PER_COMMIT = 50


def measure(bootstrap: str, commits: int) -> dict[str, int]:
    """Short answers of each isolation level over ``commits`` commits."""
    topic = f"offsets-after-commit-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept: it answers the future
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": topic})
    producer.init_transactions(30)
    clients = {level: Consumer({"bootstrap.servers": bootstrap, "group.id": topic,
                                "isolation.level": level})
               for level in ("read_committed", "read_uncommitted")}
    short = dict.fromkeys(clients, 0)
    tp = TopicPartition(topic, 0)
    try:
        for i in range(commits):
            producer.begin_transaction()
            for _ in range(PER_COMMIT):
                producer.produce(topic, b"v", partition=0)
            producer.commit_transaction(30)
            records_end = (i + 1) * (PER_COMMIT + 1) - 1  # each commit adds a marker
            for level, client in clients.items():
                if client.get_watermark_offsets(tp, timeout=10)[1] < records_end:
                    short[level] += 1
    finally:
        for client in clients.values():
            client.close()
    return short


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    broker = OwnBroker("offsets")
    try:
        broker.start()
        short = measure(broker.bootstrap, args.commits)
    finally:
        stop_all()
        broker.stop(remove=True)
    doc = {"code": code_version(), "commits": args.commits, "records_per_commit": PER_COMMIT,
           "short_answers": short}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
